"""The two exceptions the training entry points turn into one-line messages."""


class UsageError(Exception):
    """Bad input (arguments, data files, model or tokenizer paths): the CLI prints it as one line, exit code 2."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM during training: a checkpoint was saved at the step boundary; resume with --resume."""
