"""The one base class for mistakes of the user's: input files, config, flags, a cache or checkpoint
folder, an encoder name. The CLI catches `UserError` once, prints its message and exits 1; any
other exception is a bug and keeps its traceback."""


class UserError(Exception):
    """Something the user gave us is wrong; the message says what, where, and what to do next."""


class ConfigError(UserError):
    """A config file, flag or setting that cannot be used (unknown key, wrong type, bad device)."""
