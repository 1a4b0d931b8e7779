"""The comparison the project exists for: one text-prompted model vs one nnU-Net baseline per dataset.

baseline.py        softmax baseline: label-map sampler, Dice + CE, SoftmaxStep (the trainer's step), softmax inference, validation
train_baseline.py  `train_baseline` (textnnunet_train_baseline)
budget.py          equal training budgets
models.py          trained models behind one face; scoring a labelled test set
aggregate.py       pure aggregation of summaries into tables
report.py          benchmark.json, benchmark.md, plots
nnunet_import.py   a genuine nnU-Net v2 model folder: its predictions scored with the same evaluation
run.py             `run_benchmark` (textnnunet_benchmark)
seeds.py           `run_seeds` (textnnunet_benchmark --seeds): one run per training seed, mean ± sd, ties within 2 sd
"""
