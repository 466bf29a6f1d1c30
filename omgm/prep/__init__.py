"""Data preparation commands: ``omgm data download-images | check | rename-inat | mine-negatives``."""
