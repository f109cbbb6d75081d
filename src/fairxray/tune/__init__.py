"""Optuna tuning of each model x method: the search space, storage, one trial's objective and the resumable study."""

from fairxray.tune.space import (
    OBJECTIVES,
    PRUNERS,
    Dim,
    search_space,
    check_tune_params,
    apply_overrides,
    suggest,
    trial_seed,
    make_sampler,
)

from fairxray.tune.storage import (
    HEARTBEAT_S,
    storage_url,
    redact,
    make_storage,
)

from fairxray.tune.objective import (
    objective_value,
    TuneData,
    load_tune_data,
    fairness_gap,
    make_objective,
)

from fairxray.tune.study import (
    FORMAT,
    inputs_sha256,
    settings,
    study_name,
    counted_states,
    n_finished,
    counted_trials,
    choose_pareto,
    trial_record,
    summarise,
    nothing_to_tune,
    tuned_params,
    write_tuned,
    tune,
)


__all__ = [
    "Dim",
    "FORMAT",
    "HEARTBEAT_S",
    "OBJECTIVES",
    "PRUNERS",
    "TuneData",
    "apply_overrides",
    "check_tune_params",
    "choose_pareto",
    "counted_states",
    "counted_trials",
    "fairness_gap",
    "inputs_sha256",
    "load_tune_data",
    "make_objective",
    "make_sampler",
    "make_storage",
    "n_finished",
    "nothing_to_tune",
    "objective_value",
    "redact",
    "search_space",
    "settings",
    "storage_url",
    "study_name",
    "suggest",
    "summarise",
    "trial_record",
    "trial_seed",
    "tune",
    "tuned_params",
    "write_tuned",
]
