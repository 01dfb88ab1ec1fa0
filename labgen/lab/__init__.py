"""The lab: what the user asked for (Options), the model every later step reads (Lab), tunnel
kinds, boxes, and the lab file (lab.json) that keeps the model between commands."""
