"""The prompt rewriter of the `rewrite` strategy (self-rewarding prompt optimisation).

pairs.py   the pair rule: rubric means over judge samples, best and worst rewrite of a prompt
export.py  preference pairs in trl's format (prompt / chosen / rejected), JSONL and parquet
rule.py    the builtin rewriter's learned rule: the preferred phrasing per pattern, counted over pairs
request.py the rewrite request a model rewriter answers (one rewrite per request, sampled N times)
rewriter.py a rewriter's state folder and the two rewriters (builtin phrasings + rule; a served model)
train.py   DPO of a causal-LM rewriter with trl's DPOTrainer and a peft LoRA
"""
