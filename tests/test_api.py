"""The README's Python API snippet, run exactly as it is shown."""

import pathlib


def test_the_readme_python_api_snippet_runs(tmp_path, monkeypatch, capsys):
  readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
  snippet = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
  assert len(snippet.strip().splitlines()) <= 15
  monkeypatch.chdir(tmp_path)
  namespace = {"__name__": "readme_snippet"}
  exec(compile(snippet, "README.md", "exec"), namespace)
  teacher, student = namespace["teacher"], namespace["student"]
  assert teacher.metrics["test_accuracy"] > 0.9 and student.metrics["test_accuracy"] > 0.8
  assert set(student.variables) == {"params"} and student.metrics["step"] == 200
  assert (tmp_path / "runs/api/student/metrics.jsonl").exists()
  printed = capsys.readouterr().out.strip().splitlines()[-1].split()
  assert [float(v) for v in printed] == [teacher.metrics["test_accuracy"],
                                         student.metrics["test_accuracy"]]
