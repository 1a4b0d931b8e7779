"""The built-in demo: synthetic abdominal CT phantoms and the one command that runs the whole pipeline on them.

phantoms.py           the phantom generator: Dataset001-003 (partially labelled) and Dataset004 (fully labelled test set)
phantom_variants.py   rows of the generalization matrix (other spacings, fields of view, orientations, a phase)
generate_phantoms.py  textnnunet_generate_phantoms
run.py                textnnunet_demo: generate, plan and preprocess, train, choose post-processing, predict, evaluate

The demo drives the other commands as a user would, so it sits above cli/ in the import order (tests/test_layers.py).
"""
