"""Statistics the loop decides with: shares and means with 95% intervals, paired differences of
two evaluations on the same prompts and seeds, and the promotion rule."""
