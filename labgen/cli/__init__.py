"""The command line: the verbs (app.py) on top of lifecycle; exec/capture, doctor, list/prune."""
