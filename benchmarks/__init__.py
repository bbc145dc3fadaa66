"""Speed and quality measurements of the model, with their results; each script also runs by path."""
