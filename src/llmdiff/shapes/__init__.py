"""The Shapes world: scenes of coloured shapes, their captions, the evaluation suites and the training set."""

# How often a training caption names an object's colour (single, pair, relation and count scenes; listings always
# do). Here rather than in training_set so that the config can default to it without importing the world.
P_COLOR = 0.8
