"""The study's error: a study cannot start or continue, and the message names the problem and the fix (the
command line turns it into exit status 2)."""


class StudyError(RuntimeError):
    """A study cannot start or continue; the message names the problem and the fix."""
