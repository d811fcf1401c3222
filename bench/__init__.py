"""`make bench`: the engine against its ceiling and the tutorial baseline, on one machine."""
