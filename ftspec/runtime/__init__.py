"""The runtime: the only part of ftspec that imports torch, transformers, peft and trl.

Importing this package quiets the libraries' progress bars and telemetry before
they are imported; the library warnings that matter still reach the user.
"""

import os

for _name, _value in {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}.items():
    os.environ.setdefault(_name, _value)
