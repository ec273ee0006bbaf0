"""One trainer entry per stage (pt, sft, dpo, rm, rl); `python -m engine.train` picks one from the RunSpec."""
