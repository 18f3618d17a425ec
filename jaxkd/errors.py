"""The one error type for user mistakes: it names the problem and the fix."""


class JaxkdError(ValueError):
  """A bad config, input or file. The message says what is wrong and what to do.

  The CLI prints these as one line instead of a traceback.
  """
