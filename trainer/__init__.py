"""vqexplore's training program: ``python -m trainer --cfg configs/cpu/default.yaml``.

Modules: ``config`` (YAML -> validated dataclasses), ``train`` (the run, stage by stage),
``step`` (one optimiser step, the running window), ``runlog`` (metrics.jsonl, TensorBoard),
``distributed`` (processes and devices), ``checkpoint`` (atomic, pickle-free, resumable checkpoints),
``evaluate`` (``eval``), ``push`` (Hub upload),
``sweep`` (the study's tables), ``export`` (demo checkpoints), ``cli``.
"""
