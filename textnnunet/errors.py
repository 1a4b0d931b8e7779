class UserError(Exception):
    """A problem with the user's input or set-up (not a bug).

    The CLI prints the message as one line and exits with code 2, without a traceback.
    Messages name the file or setting and say what is wrong: "<thing>: <problem>".
    """
