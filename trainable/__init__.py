"""Ray Tune trainables wrapping the MPT training loop of `mpt`.

`trainable.mpt_trial.train_mpt` is the function trainable (it imports torch and Ray); `trainable.metrics` is what
a trial reports, `trainable.spec` what it is given, and `trainable.placement` where it runs. `metrics` and `spec`
import neither torch nor Ray, so the study's command line loads them in a second.
"""
