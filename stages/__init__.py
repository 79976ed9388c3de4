"""One thin script per DVC stage: parse params, call medseg, log, write outputs."""
