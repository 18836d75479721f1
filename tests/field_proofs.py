"""Every field of the spec schema, and the tests that prove it has an effect.

tests/test_field_proofs.py walks the schema and fails when a field is missing here,
when an entry names a field that no longer exists, when a named test does not
exist, or when a named test never names its field (the field's last name, in the
test's text, its parametrisation, or the constants, fixtures, helpers and spec
files it builds its spec from). Field paths: ``:tag`` is a union's variant, ``[]`` a list's items; a model
used at several places is listed at the first (see tests/test_field_proofs.py).

A proof is a test that shows the field's effect where it has one: at run time (the
trainer, the model, the data, the evaluation, the tracker) for fields that run;
in the plan or in validation for fields that only shape those. There is no list of
unproven fields: a field that cannot be honoured and tested is rejected at its line.
"""

E = "tests/test_field_effects.py::"
R = "tests/runtime/training/test_runtime.py::"
T = "tests/runtime/training/test_tracking.py::"
B = "tests/checks/test_bedrock_spec.py::"
ST = "tests/plan/test_stages.py::"
SR = "tests/test_stages_run.py::"
TE = "tests/runtime/evaluation/test_teach.py::"
DS = "tests/checks/test_distributed_spec.py::"
DF = "tests/runtime/training/test_data_filter.py::"
EC = "tests/commands/test_eval_commands.py::"
BC = "tests/backends/bedrock/test_bedrock_converse.py::"
GR = "tests/runtime/training/test_grpo.py::"
GS = "tests/checks/test_grpo_spec.py::"
KT = "tests/runtime/training/test_kto.py::"
KS = "tests/checks/test_kto_spec.py::"
RM = "tests/runtime/training/test_reward_model.py::"
RS = "tests/checks/test_reward_model_spec.py::"
MIX_P = "tests/plan/test_mixture_plan.py::"
MIX_C = "tests/checks/test_mixture_counts.py::"
MIX_R = "tests/checks/rules/test_mixture_rules.py::"

PROOFS: dict[str, list[str]] = {
    # --- top level
    "ftspec": ["tests/spec/test_invalid_specs.py::test_check_spec"],  # bad-version cases: must be 1
    "name": [R + "test_sft_full_trains_every_weight_and_writes_the_run_directory"],  # runs/<name>
    "description": [E + "test_description_is_carried_into_the_plan"],
    "extends": ["tests/spec/test_load.py::test_extends_merges_mappings_and_replaces_the_rest",
                "tests/spec/test_load.py::test_extends_chain_of_three"],
    "profiles": ["tests/spec/test_load.py::test_profiles_apply_in_order_then_sets",
                 "tests/test_shipped_specs.py::test_profile_changes_the_effective_plan"],
    # --- model
    "model:pretrained.kind": [R + "test_a_local_pretrained_model_trains_with_lora"],
    "model:pretrained.base": [R + "test_a_local_pretrained_model_trains_with_lora",
                              E + "test_pretrained_model_settings_reach_from_pretrained"],
    "model:pretrained.revision": [E + "test_pretrained_model_settings_reach_from_pretrained",
                                  "tests/store/test_cache_and_lock.py::test_lock_pins_hub_revisions_and_run_locked_uses_them"],
    "model:pretrained.dtype": [E + "test_pretrained_model_settings_reach_from_pretrained"],
    "model:pretrained.trust_remote_code": [E + "test_pretrained_model_settings_reach_from_pretrained",
                                           "tests/cli/test_cli.py::test_trust_remote_code_is_shown_prominently"],
    "model:pretrained.tokenizer": [E + "test_pretrained_model_settings_reach_from_pretrained"],
    "model:pretrained.gguf_file": ["tests/data/test_gguf.py::test_prepare_converts_the_gguf_once_to_an_ordinary_model",
                                   "tests/runtime/tools/test_gguf_real.py::test_a_few_lora_steps_on_the_real_gguf_model"],
    "model:tiny.kind": [R + "test_sft_full_trains_every_weight_and_writes_the_run_directory"],
    "model:tiny.architecture": [E + "test_tiny_model_settings_shape_the_built_model"],
    "model:tiny.hidden_size": [E + "test_tiny_model_settings_shape_the_built_model"],
    "model:tiny.num_layers": [E + "test_tiny_model_settings_shape_the_built_model"],
    "model:tiny.num_heads": [E + "test_tiny_model_settings_shape_the_built_model"],
    "model:tiny.num_kv_heads": [E + "test_tiny_model_settings_shape_the_built_model"],
    "model:tiny.intermediate_size": [E + "test_tiny_model_settings_shape_the_built_model"],
    "model:tiny.max_position_embeddings": [E + "test_tiny_model_settings_shape_the_built_model"],
    "model:tiny.init_seed": [E + "test_tiny_model_settings_shape_the_built_model"],
    "model:bedrock.kind": [B + "test_plan_training_follows_the_job_hyperparameters",
                           B + "test_bedrock_model_needs_the_bedrock_backend_and_back"],
    "model:bedrock.id": [B + "test_the_request_is_the_golden_one"],
    "model:tiny.tokenizer:byte.kind": [E + "test_tiny_model_settings_shape_the_built_model"],
    "model:tiny.tokenizer:bpe.kind": [R + "test_tiny_model_with_a_bpe_tokenizer_trained_on_the_train_split"],
    "model:tiny.tokenizer:bpe.vocab_size": [R + "test_tiny_model_with_a_bpe_tokenizer_trained_on_the_train_split"],
    # --- data
    "data.validation": [E + "test_validation_and_test_files_are_their_splits"],
    "data.test": [E + "test_validation_and_test_files_are_their_splits"],
    "data.train": [E + "test_file_format_columns_header_and_field_read_the_file",
                   MIX_P + "test_the_plan_states_each_sources_rows_as_documented"],  # one source, or a list
    "data.mix": [MIX_P + "test_every_row_and_a_number_and_limit"],
    "data.mix.total": [MIX_C + "test_the_documented_example_draws_these_rows",
                       MIX_P + "test_every_row_and_a_number_and_limit"],
    "data.mix.seed": [MIX_C + "test_the_seed_is_data_mix_seed_else_data_split_seed_else_42",
                      MIX_P + "test_the_same_seed_makes_the_same_plan_and_another_seed_another"],
    "data.split": [R + "test_sft_full_trains_every_weight_and_writes_the_run_directory",
                   E + "test_split_fractions_seed_and_stratify_carve_the_held_out_rows"],
    "data.split.validation": [E + "test_split_fractions_seed_and_stratify_carve_the_held_out_rows"],
    "data.split.test": [E + "test_split_fractions_seed_and_stratify_carve_the_held_out_rows"],
    "data.split.seed": [E + "test_split_fractions_seed_and_stratify_carve_the_held_out_rows"],
    "data.split.stratify": [E + "test_split_fractions_seed_and_stratify_carve_the_held_out_rows"],
    "data.rename": [E + "test_rename_derive_and_limit_shape_the_rows"],
    "data.derive": [E + "test_rename_derive_and_limit_shape_the_rows"],
    "data.limit": [E + "test_rename_derive_and_limit_shape_the_rows",
                   DF + "test_a_number_still_limits_every_split"],
    "data.limit:splits.train": [DF + "test_a_limit_on_the_training_rows_alone_leaves_the_other_splits"],
    "data.limit:splits.validation": [DF + "test_a_limit_on_the_training_rows_alone_leaves_the_other_splits"],
    "data.limit:splits.test": [DF + "test_a_limit_on_the_training_rows_alone_leaves_the_other_splits"],
    "data.filter": [DF + "test_a_filter_keeps_the_rows_it_renders_true_for_before_splitting_and_counts_the_rest",
                    DF + "test_rows_a_filter_drops_are_never_formatted"],
    "data.on_bad_row": ["tests/data/test_messy_data.py::test_skipped_rows_are_counted_in_the_statistics_and_the_report",
                        R + "test_a_split_left_empty_by_skipped_rows_is_an_error"],
    "data.train:file.path": [E + "test_file_format_columns_header_and_field_read_the_file"],
    "data.train:file.format": [E + "test_file_format_columns_header_and_field_read_the_file"],
    "data.train:file.columns": [E + "test_file_format_columns_header_and_field_read_the_file"],
    "data.train:file.header": [E + "test_file_format_columns_header_and_field_read_the_file"],
    "data.train:file.field": [E + "test_file_format_columns_header_and_field_read_the_file"],
    "data.train:hub.hub": [R + "test_hub_dataset_sources_go_through_datasets"],
    "data.train:hub.split": [R + "test_hub_dataset_sources_go_through_datasets",
                             E + "test_a_hub_subset_is_passed_to_datasets"],
    "data.train:hub.subset": [E + "test_a_hub_subset_is_passed_to_datasets"],
    "data.train:hub.revision": [R + "test_hub_dataset_sources_go_through_datasets"],
    # a mixture's sources (data.train as a list): the plan's draw and validate's checks; the file and hub
    # sources share the code that reads these fields (ftspec.checks.mixture, ftspec.plan.mixture)
    "data.train:mixture[]:file.name": [MIX_R + "test_two_sources_of_one_name_are_refused_at_the_second",
                                       MIX_P + "test_the_plan_states_each_sources_rows_as_documented"],
    "data.train:mixture[]:file.rename": [MIX_P + "test_the_plan_states_each_sources_rows_as_documented",
                                         MIX_R + "test_a_column_one_source_lacks_is_said_at_that_source"],
    "data.train:mixture[]:file.derive": [MIX_P + "test_the_plan_states_each_sources_rows_as_documented",
        MIX_P + "test_a_weight_change_rekeys_prepare_data_and_train_but_not_the_base_evaluation"],
    "data.train:mixture[]:file.weight": [MIX_C + "test_the_documented_example_draws_these_rows",
        MIX_P + "test_a_weight_change_rekeys_prepare_data_and_train_but_not_the_base_evaluation"],
    "data.train:mixture[]:file.rows": [MIX_C + "test_each_source_is_split_on_its_own_before_it_is_drawn"],
    "data.train:mixture[]:file.epochs": [MIX_C + "test_each_source_is_split_on_its_own_before_it_is_drawn",
                                         MIX_P + "test_plan_shows_each_source_drawn_repeated_and_its_shares"],
    "data.train:mixture[]:hub.name": [MIX_R + "test_two_sources_of_one_name_are_refused_at_the_second",
                                      MIX_P + "test_the_plan_states_each_sources_rows_as_documented"],
    "data.train:mixture[]:hub.rename": [MIX_P + "test_the_plan_states_each_sources_rows_as_documented",
                                        MIX_R + "test_a_column_one_source_lacks_is_said_at_that_source"],
    "data.train:mixture[]:hub.derive": [MIX_P + "test_the_plan_states_each_sources_rows_as_documented",
        MIX_P + "test_a_weight_change_rekeys_prepare_data_and_train_but_not_the_base_evaluation"],
    "data.train:mixture[]:hub.weight": [MIX_C + "test_the_documented_example_draws_these_rows",
        MIX_P + "test_a_weight_change_rekeys_prepare_data_and_train_but_not_the_base_evaluation"],
    "data.train:mixture[]:hub.rows": [MIX_C + "test_each_source_is_split_on_its_own_before_it_is_drawn"],
    "data.train:mixture[]:hub.epochs": [MIX_C + "test_each_source_is_split_on_its_own_before_it_is_drawn",
                                        MIX_P + "test_plan_shows_each_source_drawn_repeated_and_its_shares"],
    # --- format
    "format:prompt_completion.kind": [E + "test_rename_derive_and_limit_shape_the_rows"],
    "format:prompt_completion.prompt": [E + "test_rename_derive_and_limit_shape_the_rows"],
    "format:prompt_completion.completion": [E + "test_rename_derive_and_limit_shape_the_rows"],
    "format:prompt_completion.loss": [E + "test_format_loss_all_puts_loss_on_the_prompt_too",
                                      "tests/runtime/training/test_prepared_tokens.py::test_prompt_completion_tokens_are_trls"],
    # templates, wherever they are
    "data.filter:file.file": [R + "test_chat_loss_mask_covers_exactly_the_assistant_tokens"],
    "data.filter:builtin.builtin": [E + "test_a_builtin_template_is_the_chat_template_the_tokenizer_renders"],
    "format:chat.kind": [R + "test_chat_loss_mask_covers_exactly_the_assistant_tokens"],
    "format:chat.messages": [R + "test_chat_loss_mask_covers_exactly_the_assistant_tokens"],
    "format:chat.messages[].role": [R + "test_chat_loss_mask_covers_exactly_the_assistant_tokens"],
    "format:chat.messages[].content": [R + "test_chat_loss_mask_covers_exactly_the_assistant_tokens"],
    "format:chat.messages_column": [E + "test_messages_column_takes_the_conversation_from_a_column"],
    "format:chat.chat_template": [R + "test_chat_loss_mask_covers_exactly_the_assistant_tokens",
                                  E + "test_a_builtin_template_is_the_chat_template_the_tokenizer_renders"],
    "format:chat.loss": [R + "test_chat_loss_mask_covers_exactly_the_assistant_tokens",
                         "tests/runtime/training/test_prepared_tokens.py::test_chat_tokens_are_trls"],
    "format:preference.kind": [R + "test_dpo_lora_trains"],
    "format:preference.prompt": [R + "test_dpo_lora_trains"],
    "format:preference.chosen": [R + "test_dpo_lora_trains"],
    "format:preference.rejected": [R + "test_dpo_lora_trains"],
    "format:feedback.kind": [
        KT + "test_kto_makes_the_desirable_completions_likelier_than_the_undesirable_on_held_out_rows",
        KS + "test_bad_kto_specs_are_refused_at_their_line"],
    "format:feedback.prompt": [
        KT + "test_kto_makes_the_desirable_completions_likelier_than_the_undesirable_on_held_out_rows"],
    "format:feedback.completion": [
        KT + "test_kto_makes_the_desirable_completions_likelier_than_the_undesirable_on_held_out_rows"],
    "format:feedback.label": [
        KT + "test_kto_makes_the_desirable_completions_likelier_than_the_undesirable_on_held_out_rows",
        KS + "test_a_label_that_is_not_a_boolean_is_a_bad_row_at_its_file_and_row",
        KS + "test_one_bad_label_row_is_reported_at_its_row_or_skipped"],
    # --- method
    "method:sft.kind": [R + "test_sft_full_trains_every_weight_and_writes_the_run_directory"],
    "method:dpo.kind": [R + "test_dpo_lora_trains"],
    "method:dpo.beta": [E + "test_dpo_beta_loss_type_and_label_smoothing_reach_the_trainer"],
    "method:dpo.loss_type": [E + "test_dpo_beta_loss_type_and_label_smoothing_reach_the_trainer"],
    "method:dpo.label_smoothing": [E + "test_dpo_beta_loss_type_and_label_smoothing_reach_the_trainer"],
    "method:kto.kind": [KT + "test_kto_makes_the_desirable_completions_likelier_than_the_undesirable_on_held_out_rows"],
    "method:kto.beta": [KT + "test_beta_the_weights_and_the_loss_reach_the_trainer_with_a_lora_adapter",
                        KS + "test_a_beta_change_retrains_and_an_eval_change_does_not"],
    "method:kto.desirable_weight": [KT + "test_beta_the_weights_and_the_loss_reach_the_trainer_with_a_lora_adapter"],
    "method:kto.undesirable_weight": [
        KT + "test_beta_the_weights_and_the_loss_reach_the_trainer_with_a_lora_adapter"],
    "method:kto.loss_type": [KT + "test_beta_the_weights_and_the_loss_reach_the_trainer_with_a_lora_adapter",
                             KS + "test_apo_zero_unpaired_needs_no_second_row_per_batch"],
    "method:grpo.kind": [GR + "test_a_metric_reward_rises_and_the_held_out_metric_with_it"],
    "method:grpo.rewards": [
        GR + "test_a_metric_reward_rises_and_the_held_out_metric_with_it",
        GR + "test_a_reward_function_gets_each_completion_cut_as_evaluation_cuts_it_and_its_rows_answer",
        GS + "test_bad_rewards_and_groups_are_refused_at_their_line"],
    "method:grpo.rewards[]:python.python": [
        GR + "test_a_reward_function_gets_each_completion_cut_as_evaluation_cuts_it_and_its_rows_answer",
        GR + "test_a_reward_file_changed_after_planning_is_refused"],
    "method:grpo.group_size": [GR + "test_the_group_completions_temperature_kl_and_loss_reach_the_trainer",
                               GS + "test_bad_rewards_and_groups_are_refused_at_their_line"],
    "method:grpo.max_completion_tokens": [GR + "test_the_group_completions_temperature_kl_and_loss_reach_the_trainer",
                                          GS + "test_max_completion_tokens_defaults_to_the_evaluations_answers"],
    "method:grpo.temperature": [GR + "test_the_group_completions_temperature_kl_and_loss_reach_the_trainer"],
    "method:grpo.kl": [GR + "test_the_group_completions_temperature_kl_and_loss_reach_the_trainer"],
    "method:grpo.loss_type": [GR + "test_the_group_completions_temperature_kl_and_loss_reach_the_trainer"],
    "method:grpo.estimator": [GR + "test_rloo_trains_with_leave_one_out_advantages",
                              GS + "test_bad_rewards_and_groups_are_refused_at_their_line"],
    "method:grpo.rewards[]:reward_model.reward_model": [
        RM + "test_a_grpo_stage_learns_from_an_earlier_stages_reward_model",
        RS + "test_a_reward_model_reward_is_refused_at_its_line"],
    "method:grpo.rewards[]:reward_model.weight": [
        RM + "test_a_grpo_stage_learns_from_an_earlier_stages_reward_model",
        RS + "test_a_grpo_stage_names_the_reward_model_stage_and_its_train_key"],
    "method:reward_model.kind": [RM + "test_a_reward_model_beats_chance_on_held_out_pairs_with_a_margin",
                                 RS + "test_bad_reward_model_specs_are_refused_at_their_line"],
    "method:reward_model.center_rewards_coefficient": [
        RM + "test_the_settings_reach_the_reward_trainer_and_a_lora_adapter_trains_the_score_head",
        RM + "test_a_center_rewards_coefficient_of_zero_is_no_centring",
        RS + "test_the_reward_models_center_coefficient_re_trains_and_its_metrics_only_re_score"],
    "method:grpo.sample_every": [
        GR + "test_a_reward_function_gets_each_completion_cut_as_evaluation_cuts_it_and_its_rows_answer"],
    "method:sft.adapter:full.kind": [R + "test_sft_full_trains_every_weight_and_writes_the_run_directory"],
    "method:sft.adapter:lora.kind": [R + "test_sft_lora_trains_the_adapter_and_leaves_the_base"],
    "method:sft.adapter:lora.r": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "method:sft.adapter:lora.alpha": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "method:sft.adapter:lora.dropout": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "method:sft.adapter:lora.target_modules": [E + "test_training_and_lora_settings_reach_the_trainer",
                                               R + "test_a_local_pretrained_model_trains_with_lora"],
    "method:sft.adapter:lora.bias": [E + "test_training_and_lora_settings_reach_the_trainer"],
    # --- training
    "training.epochs": [E + "test_epochs_and_warmup_ratio_set_the_steps_the_trainer_runs"],
    "training.max_steps": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.learning_rate": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.learning_rate_multiplier": [B + "test_ftspec_settings_map_onto_the_family_names",
                                          B + "test_the_multiplier_is_refused_on_a_local_run"],
    "training.lr_scheduler": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.warmup_ratio": [E + "test_epochs_and_warmup_ratio_set_the_steps_the_trainer_runs"],
    "training.warmup_steps": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.batch_size": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.gradient_accumulation": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.max_length": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.seed": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.optimizer": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.weight_decay": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.max_grad_norm": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.batching": ["tests/runtime/training/test_packing.py::test_the_batching_mode_reaches_the_trainer"],
    "training.gradient_checkpointing": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.logging_steps": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.eval_every": [R + "test_sft_full_trains_every_weight_and_writes_the_run_directory"],
    "training.eval_rows": ["tests/runtime/training/test_eval_rows.py::"
                           "test_the_validation_loss_is_computed_on_the_plans_rows"],
    "training.save_every": [R + "test_no_checkpoint_at_the_last_step_and_none_left_once_the_step_is_complete",
                            E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.save_total_limit": [E + "test_training_and_lora_settings_reach_the_trainer"],
    "training.early_stopping": [E + "test_early_stopping_patience_and_min_delta_stop_training"],
    "training.early_stopping.patience": [E + "test_early_stopping_patience_and_min_delta_stop_training"],
    "training.early_stopping.min_delta": [E + "test_early_stopping_patience_and_min_delta_stop_training"],
    # --- eval
    "eval.split": [E + "test_eval_generation_settings_reach_generate"],
    "eval.baseline": [E + "test_baseline_false_drops_the_base_models_evaluation"],
    "eval.mode": [EC + "test_choices_mode_and_a_judge_through_a_local_model"],
    "eval.choices": [R + "test_choices_outside_the_allowed_labels_stop_the_run"],
    "eval.metrics": [EC + "test_choices_mode_and_a_judge_through_a_local_model"],
    "eval.max_new_tokens": [E + "test_eval_generation_settings_reach_generate"],
    "eval.stop": [E + "test_eval_generation_settings_reach_generate",
                  "tests/runtime/evaluation/test_generation_stop.py::test_a_stop_string_stops_generation_and_is_not_in_the_prediction"],
    "eval.few_shot": [E + "test_few_shot_examples_go_before_the_baselines_prompt"],
    "eval.batch_size": [E + "test_eval_generation_settings_reach_generate"],
    "eval.limit": [E + "test_eval_generation_settings_reach_generate"],
    "eval.gates": [EC + "test_a_gate_not_met_exits_3_and_says_by_how_much"],
    "eval.metrics[]:simple.name": [
        EC + "test_choices_mode_and_a_judge_through_a_local_model"],
    "eval.metrics[]:simple.extract": [E + "test_eval_metric_extraction_is_applied"],
    "eval.metrics[]:simple.positive": [
        "tests/runtime/evaluation/test_honest_eval.py::test_positive_reaches_the_plan_and_the_eval_steps_metric",
        "tests/runtime/evaluation/test_honest_eval.py::test_f1_with_two_labels_is_the_positive_labels_f1"],
    "eval.metrics[]:json_schema.name": [E + "test_a_json_schema_metric_checks_the_extracted_answer_against_its_schema"],
    "eval.metrics[]:json_schema.schema": [
        E + "test_a_json_schema_metric_checks_the_extracted_answer_against_its_schema"],
    "eval.metrics[]:json_schema.extract": [
        E + "test_a_json_schema_metric_checks_the_extracted_answer_against_its_schema"],
    "eval.metrics[]:judge.name": [
        EC + "test_choices_mode_and_a_judge_through_a_local_model"],
    "eval.metrics[]:judge.model": [
        EC + "test_choices_mode_and_a_judge_through_a_local_model"],
    "eval.metrics[]:judge.rubric": [E + "test_the_judges_rubric_score_regex_and_scale_come_from_the_spec"],
    "eval.metrics[]:judge.score_regex": [E + "test_the_judges_rubric_score_regex_and_scale_come_from_the_spec",
                                         "tests/runtime/evaluation/test_evaluate.py::test_judge_scores_are_parsed_and_scaled"],
    "eval.metrics[]:judge.scale": [E + "test_the_judges_rubric_score_regex_and_scale_come_from_the_spec",
                                   "tests/runtime/evaluation/test_evaluate.py::test_judge_scores_are_parsed_and_scaled"],
    # --- compute
    "compute.backend": [E + "test_the_backend_can_only_be_local",
                        B + "test_bedrock_model_needs_the_bedrock_backend_and_back"],
    "compute.device": [R + "test_a_run_time_error_at_a_key_points_at_its_line_in_the_spec"],
    "compute.precision": [
        E + "test_precision_is_what_the_trainer_is_given_or_a_clear_error",
        "tests/runtime/training/test_threads.py::test_the_plan_states_the_precision_the_device_makes_certain"],
    "compute.threads": [
        "tests/runtime/training/test_threads.py::test_the_run_sets_and_shows_the_threads_and_the_precision",
        "tests/runtime/training/test_threads.py::test_threads_set_in_the_spec_are_the_plans"],
    "compute.attention": [
        "tests/runtime/training/test_packing.py::test_the_attention_implementation_reaches_the_model"],
    # Several processes: the plan's launch (tests/checks/test_distributed_spec.py); the runtime's
    # tests (tests/test_distributed*.py) run what it says.
    "compute.num_processes": [DS + "test_the_plans_launch_and_trainer_keywords",
                              DS + "test_several_processes_are_accepted_with_a_strategy"],
    "compute.num_nodes": [DS + "test_the_plans_launch_and_trainer_keywords"],
    "compute.strategy": [DS + "test_the_plans_launch_and_trainer_keywords"],
    "compute.fsdp": [DS + "test_the_plans_launch_and_trainer_keywords",
                     DS + "test_fsdp_settings_without_strategy_fsdp_are_an_error_at_their_line"],
    "compute.fsdp.wrap": [DS + "test_the_plan_wraps_the_architectures_decoder_layer_or_leaves_it_to_transformers",
                          DS + "test_fsdp_wrap_without_the_decoder_layer_is_a_warning"],
    "compute.fsdp.reshard_after_forward": [DS + "test_transformers_takes_the_fsdp_keywords_as_planned"],
    "compute.fsdp.cpu_offload": [DS + "test_transformers_takes_the_fsdp_keywords_as_planned"],
    "compute.fsdp.activation_checkpointing": [DS + "test_the_plans_launch_and_trainer_keywords"],
    "compute.fsdp.state_dict": [DS + "test_transformers_takes_the_fsdp_keywords_as_planned"],
    "compute.deepspeed": [DS + "test_the_plans_launch_and_trainer_keywords",
                          DS + "test_deepspeed_settings_without_strategy_deepspeed_are_an_error_at_their_line"],
    "compute.deepspeed.zero_stage": [DS + "test_the_plans_launch_and_trainer_keywords"],
    "compute.deepspeed.offload_optimizer": [DS + "test_the_plans_launch_and_trainer_keywords"],
    "compute.deepspeed.offload_params": [DS + "test_the_plans_launch_and_trainer_keywords",
                                         DS + "test_offloading_parameters_needs_zero_stage_3"],
    "compute.bedrock": [B + "test_the_request_is_the_golden_one"],
    "compute.bedrock.region": [B + "test_plan_text_has_one_line_for_the_backend"],
    "compute.bedrock.customization": [B + "test_continued_pre_training_for_titan_renders_its_input_lines",
                                      B + "test_the_request_has_exactly_the_api_parameters"],
    "compute.bedrock.teacher_model": [B + "test_the_request_has_exactly_the_api_parameters"],
    "compute.bedrock.max_response_length": [B + "test_the_request_has_exactly_the_api_parameters"],
    "compute.bedrock.role_arn": [B + "test_the_request_is_the_golden_one"],
    "compute.bedrock.kms_key_id": [B + "test_filled_request_respects_the_api_patterns"],
    "compute.bedrock.vpc": [B + "test_filled_request_respects_the_api_patterns"],
    "compute.bedrock.vpc.subnets": [B + "test_filled_request_respects_the_api_patterns"],
    "compute.bedrock.vpc.security_groups": [B + "test_filled_request_respects_the_api_patterns"],
    "compute.bedrock.tags": [B + "test_the_request_is_the_golden_one"],
    "compute.bedrock.serve": [B + "test_plan_text_has_one_line_for_the_backend",
                              BC + "test_nothing_is_served_unless_the_plan_says_so"],
    "compute.bedrock.model_units": [BC + "test_provisioned_is_deleted_when_evaluation_fails"],
    "compute.bedrock.max_concurrency": [BC + "test_answers_come_back_in_order_under_concurrency"],
    "compute.bedrock.s3.bucket": [B + "test_the_request_has_exactly_the_api_parameters"],
    "compute.bedrock.s3.prefix": [B + "test_the_request_has_exactly_the_api_parameters", B + "test_valid_formats_pass"],
    # --- output and tracking
    "output.dir": [E + "test_output_dir_places_the_run_directory"],
    "output.store": ["tests/commands/test_remote_commands.py::test_output_store_in_the_spec_shares_the_steps",
                     "tests/commands/test_remote_commands.py::test_a_store_ftspec_cannot_use_is_refused_at_its_line"],
    "tracking:none.kind": [T + "test_tracking_arguments_name_the_tracker_and_the_run"],
    "tracking:tensorboard.kind": [T + "test_ftspec_run_writes_tensorboard_events_into_the_run_directory"],
    "tracking:wandb.kind": [T + "test_ftspec_run_reports_to_the_specs_wandb_project"],
    "tracking:wandb.project": [T + "test_ftspec_run_reports_to_the_specs_wandb_project",
                               T + "test_wandb_offline_run_has_the_specs_project_entity_and_name_and_logs_the_loss"],
    "tracking:wandb.entity": [T + "test_ftspec_run_reports_to_the_specs_wandb_project"],
    "tracking:mlflow.kind": [T + "test_ftspec_run_reports_to_the_specs_mlflow_experiment"],
    # --- stages (tests/plan/test_stages.py: the plan; tests/test_stages_run.py: the run)
    "stages": [ST + "test_the_last_stage_is_the_specs_plan_and_holds_the_earlier_ones",
               SR + "test_sft_then_dpo_the_dpo_reference_is_the_sft_model"],
    "stages[].name": [ST + "test_the_last_stage_is_the_specs_plan_and_holds_the_earlier_ones",
                      ST + "test_mistakes_in_the_stage_list_are_reported_together_at_their_lines"],
    "stages[].description": [ST + "test_a_stages_model_data_format_and_method_replace_the_specs_and_the_rest_merges"],
    "stages[].from": [ST + "test_a_stage_that_sets_its_model_or_from_base_starts_fresh",
                      ST + "test_mistakes_in_the_stage_list_are_reported_together_at_their_lines"],
    "stages[].model": [ST + "test_a_stage_that_sets_its_model_or_from_base_starts_fresh",
                       SR + "test_the_distilled_student_learns_from_the_teacher_alone"],
    "stages[].data": [ST + "test_a_stages_model_data_format_and_method_replace_the_specs_and_the_rest_merges",
                      SR + "test_logit_distillation_on_unlabelled_rows_leaves_the_teacher_unwritten"],
    "stages[].format": [ST + "test_the_last_stage_is_the_specs_plan_and_holds_the_earlier_ones",
                        SR + "test_sft_then_dpo_the_dpo_reference_is_the_sft_model"],
    "stages[].method": [ST + "test_the_last_stage_is_the_specs_plan_and_holds_the_earlier_ones",
                        SR + "test_sft_then_dpo_the_dpo_reference_is_the_sft_model"],
    "stages[].training": [ST + "test_a_stages_model_data_format_and_method_replace_the_specs_and_the_rest_merges",
                          SR + "test_a_change_to_the_second_stage_re_runs_only_it"],
    "stages[].eval": [ST + "test_a_stages_model_data_format_and_method_replace_the_specs_and_the_rest_merges"],
    "stages[].compute": [ST + "test_a_stages_model_data_format_and_method_replace_the_specs_and_the_rest_merges"],
    "stages[].tracking": [ST + "test_a_stages_model_data_format_and_method_replace_the_specs_and_the_rest_merges"],
    # --- distillation (the plan: tests/plan/test_stages.py; the teacher's answers:
    # tests/runtime/evaluation/test_teach.py; the loss: tests/runtime/recipes/test_distill_loss.py)
    "method:distill.kind": [ST + "test_distillation_steps_and_keys",
                            SR + "test_the_distilled_student_learns_from_the_teacher_alone"],
    "method:distill.teacher:stage.stage": [ST + "test_distillation_steps_and_keys",
                                           SR + "test_the_distilled_student_learns_from_the_teacher_alone"],
    "method:distill.mode": [
        ST + "test_distillation_steps_and_keys",
        TE + "test_a_teacher_in_choices_mode_answers_with_the_likeliest_label_as_evaluation_scores_it"],
    "method:distill.max_new_tokens": [ST + "test_the_distillation_settings_reach_the_plan",
                                      TE + "test_answers_are_generated_in_batches_and_saved_after_each"],
    "method:distill.stop": [ST + "test_the_distillation_settings_reach_the_plan",
                            TE + "test_answers_are_generated_in_batches_and_saved_after_each"],
    "method:distill.batch_size": [ST + "test_the_distillation_settings_reach_the_plan",
                                  TE + "test_answers_are_generated_in_batches_and_saved_after_each"],
    "method:distill.filter.extract": [ST + "test_the_distillation_settings_reach_the_plan",
                                      TE + "test_the_filter_drops_by_reason"],
    "method:distill.filter.extract.regex": [ST + "test_the_distillation_settings_reach_the_plan",
                                            TE + "test_the_filter_drops_by_reason",
                                            E + "test_eval_metric_extraction_is_applied"],
    "method:distill.filter.extract.which": [ST + "test_the_distillation_settings_reach_the_plan",
                                            E + "test_eval_metric_extraction_is_applied"],
    "method:distill.filter.extract.template": [
        ST + "test_the_distillation_settings_reach_the_plan",
        TE + "test_the_filter_drops_by_reason",
        E + "test_a_json_schema_metric_checks_the_extracted_answer_against_its_schema",
        "tests/runtime/evaluation/test_metrics.py::test_extract_template"],
    "method:distill.filter.max_tokens": [ST + "test_the_distillation_settings_reach_the_plan",
                                         TE + "test_the_filter_drops_by_reason"],
    "method:distill.filter.train_on": [ST + "test_the_distillation_settings_reach_the_plan",
                                       TE + "test_the_filter_drops_by_reason"],
    "method:distill.logits": [ST + "test_logit_distillation_needs_one_vocabulary",
                              SR + "test_logit_distillation_on_unlabelled_rows_leaves_the_teacher_unwritten"],
    "method:distill.logits.alpha": [ST + "test_the_distillation_settings_reach_the_plan",
                                    "tests/runtime/recipes/test_distill_loss.py::test_the_student_learns_from_a_frozen_teacher_that_is_never_written"],
    "method:distill.logits.temperature": [ST + "test_the_distillation_settings_reach_the_plan",
                                          "tests/runtime/recipes/test_distill_loss.py::test_kd_loss_equals_the_hand_computation"],
    "tracking:mlflow.experiment": [T + "test_ftspec_run_reports_to_the_specs_mlflow_experiment",
                                   T + "test_mlflow_file_store_has_the_specs_experiment_and_the_loss"],
}

_QLORA = ["tests/test_field_effects.py::test_qlora_settings_make_the_quantization_config",
          "tests/test_field_effects.py::test_qlora_reaches_the_model_load"]
PROOFS.update({
    "method:sft.adapter:qlora.kind": _QLORA + [E + "test_qlora_without_bitsandbytes_is_an_error_at_the_adapter"],
    "method:sft.adapter:qlora.bits": _QLORA,
    "method:sft.adapter:qlora.quant_type": _QLORA,
    "method:sft.adapter:qlora.double_quant": _QLORA[:1],  # the model load is given the config whole
    "method:sft.adapter:qlora.quant_storage": [
        DS + "test_quant_storage_is_resolved_in_the_plan",
        DS + "test_qlora_storage_other_than_the_load_dtype_is_an_error_under_sharding"],
})

# The sweep section (ftspec sweep; not part of the plan).
_PS = "tests/plan/test_sweep_plan.py::"
_CS = "tests/commands/test_sweep.py::"
_PRUNE = "tests/runtime/training/test_pruning.py::"
_POOL = "tests/commands/test_sweep_pool.py::"
_RANDOM = _PS + "test_random_draws_the_same_trials_for_a_seed_and_others_for_another"
PROOFS.update({
    "sweep": [_CS + "test_a_2x2_grid_shares_data_and_base_eval_and_a_killed_sweep_trains_only_the_rest"],
    "sweep.fields": [_PS + "test_a_grid_is_every_combination_in_a_fixed_order_with_the_objective_from_eval_metrics"],
    "sweep.method": [_RANDOM],
    "sweep.trials": [_RANDOM],
    "sweep.seed": [_RANDOM],
    "sweep.fields{}:range.low": [_RANDOM],
    "sweep.fields{}:range.high": [_RANDOM],
    "sweep.fields{}:range.log": [_RANDOM],
    "sweep.fields{}:range.step": [_PS + "test_a_stepped_range_draws_only_its_steps"],
    "sweep.objective.metric": [_PS + "test_a_metric_lower_is_better_is_minimised"],
    "sweep.objective.split": [_CS + "test_a_bad_objective_is_refused_at_its_line"],
    "sweep.prune": [_PRUNE + "test_a_sweep_shows_a_pruned_trial_as_pruned_not_failed"],
    "sweep.workers": [
        _POOL + "test_two_workers_train_each_trial_of_a_2x2_grid_once_and_pick_the_winner_one_process_picks"],
})
