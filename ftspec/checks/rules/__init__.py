"""The rules, one module per concern; importing this package registers every rule
(ftspec.checks.registry) and fixes the order they run in.

The order is today's, and it matters: check_template_names says whether the sample
rows can be rendered (ctx.names_ok), check_sample_rows leaves the formatter that later
rules render rows with, check_filter counts what data.filter keeps (the row counts of
check_data_size, check_batch_fits and check_bedrock), and every rendering draws on one
time budget, spent in this order. The rules of quiet mistakes run last.
"""

from __future__ import annotations

from ftspec.checks.registry import RULES
from ftspec.checks.rules import (  # noqa: F401
                                 bedrock,
                                 compute,
                                 data,
                                 distributed,
                                 eval,
                                 feedback,
                                 method,
                                 mixture,
                                 model,
                                 paths,
                                 reward_model,
                                 rewards,
                                 silent_mistakes,
                                 templates,
)

ORDER = (
    "check_mixture",
    "check_rename",
    "check_template_names",
    "check_mixture_columns",
    "check_sample_rows",
    "check_filter",
    "check_mixture_rows",
    "check_other_templates",
    "check_method_format",
    "check_rewards",
    "check_feedback",
    "check_reward_model",
    "check_qlora_device",
    "check_precision",
    "check_attention",
    "check_batching",
    "check_lora_targets",
    "check_chat_template",
    "check_splits",
    "check_limit",
    "check_data_size",
    "check_model_revision",
    "check_max_length",
    "check_early_stopping",
    "check_eval",
    "check_json_schemas",
    "check_paths",
    "check_same_data",
    "check_choices",
    "check_batch_fits",
    "check_strategy",
    "check_qlora_sharding",
    "check_fsdp_wrap",
    "check_bedrock",
    # quiet mistakes (silent_mistakes)
    "check_constant_answer",
    "check_classification_labels",
    "check_text_compared_with_number",
    "check_headerless",
    "check_held_out_overlap",
    "check_truncation",
    "check_extract_finds_nothing",
    "check_positive_label",
)

RULES.seal(ORDER)
