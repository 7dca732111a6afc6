"""How an image is judged beyond one 1-10 score: the pieces that make a run's verdicts hold up under any critic.

- `score`: one reading of the judge prompt (cold or warm), the building block of samples and second looks;
- `duel`: two images compared in both orders, with position flips and ties counted;
- `checklist`: the critic writes weighted yes/no questions once; each image scores its weighted pass rate,
  P(yes) where the backend returns log probabilities, and the unmet questions go to the proposer;
- `confirm`: a DONE stops a run only after a second look agrees;
- `final_pick`: at the stop, the top images meet again under a careful judge and the winner is crowned;
- `audit`: an independent critic checks at the end whether the run improved on its first image;
- `measure`: the judge's behaviour counted in passing (summary.txt, report.html) and by `judge-check`;
- `check`: `refineloop judge-check`, which measures the user's own critic and recommends settings.

Nodes call into this package through small hooks; nothing here imports a node.
"""
