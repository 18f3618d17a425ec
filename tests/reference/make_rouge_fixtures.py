"""ROUGE-L F1 from the rouge-score package (Google's reference implementation, the one
MiniLLM, GKD and DistiLLM report) on pairs of texts, for tests/test_generation_quality.py
(jaxkd.jobs.generation_quality.rouge_l must give the same without the package).

  /tmp/refenv/bin/pip install rouge-score
  /tmp/refenv/bin/python tests/reference/make_rouge_fixtures.py
"""

import json
import pathlib
import random

from rouge_score import rouge_scorer

OUT = pathlib.Path(__file__).resolve().parent / "fixtures" / "rouge_l.json"
WORDS = ("the king is dead Long LIVE the queen, my lord! what say you to this? naive cafe "
         "fair is foul and foul is fair 2 b or not 2 b o'er ne'er -- hover through the "
         "fog and filthy air").split()


def pairs(count: int = 200, seed: int = 0) -> list[tuple[str, str]]:
  rng = random.Random(seed)
  made = [("", "the king"), ("the king", ""), ("!!! ,,,", "the king"), ("the king", "the king"),
          ("KING, the", "the king."), ("a b c d e", "e d c b a")]
  for _ in range(count):
    text = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))
    made.append((text(), text()))
  return made


if __name__ == "__main__":
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
  rows = [{"prediction": p, "reference": r,
           "rouge_l": scorer.score(target=r, prediction=p)["rougeL"].fmeasure}
          for p, r in pairs()]
  OUT.write_text(json.dumps({"rouge_score": "0.1.2", "use_stemmer": False, "pairs": rows},
                            indent=1) + "\n")
  print(f"{len(rows)} pairs -> {OUT}")
