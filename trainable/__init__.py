"""Ray Tune trainables wrapping the MPT training loop of `mpt`.

`trainable.mpt_trial.train_mpt` is the function trainable (it imports torch and Ray);
`trainable.spec` holds what a study needs without them.
"""

from trainable.spec import META_KEYS, OBJECTIVES, STATE_FILE, per_language, trial_config

__all__ = ["META_KEYS", "OBJECTIVES", "STATE_FILE", "per_language", "trial_config"]
