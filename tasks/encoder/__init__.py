"""The image encoder stage's work: preparing open_clip_train's inputs, running it, exporting its result."""
