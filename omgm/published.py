"""The published settings that several stages share, written once (the paper's and the official scripts' values).

- :data:`ALPHA`: step 2's fusion weight of the step-1 score, ``alpha * s1 + (1 - alpha) * max(section scores)``.
- :data:`TOP_KS`: the recall cut-offs of the paper's tables.
- :data:`BETA`: step 3's weight of the step-2 section scores, ``beta * sec_sim + (1 - beta) * q2s`` (the published
  script passes 0.2; its argparse default is 0).
"""
ALPHA = 0.9
BETA = 0.2
TOP_KS = (1, 5, 10, 20)   # the recall cut-offs the paper reports (steps 1 and 2)
# the paper's efficiency table (E-VQA, per query, on the authors' GPU): retrieval, and retrieval + answer
PAPER_SECONDS_PER_QUERY = {"retrieval": 0.402, "end_to_end": 2.023}
