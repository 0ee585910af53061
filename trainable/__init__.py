"""Ray Tune trainables wrapping the MPT training loop of `mpt`.

`trainable.mpt_trial.train_mpt` is the function trainable (it imports torch and Ray);
`trainable.spec` holds what a study needs without them.
"""

from trainable.spec import (CORRECT_PREFIX, META_KEYS, OBJECTIVES, RUNTIME_PREFIX, SELECTED_DEV_PREFIX, STATE_FILE,
                            per_language, trained_all_epochs, trial_config)

__all__ = ["CORRECT_PREFIX", "META_KEYS", "OBJECTIVES", "RUNTIME_PREFIX", "SELECTED_DEV_PREFIX", "STATE_FILE",
           "per_language", "trained_all_epochs", "trial_config"]
