"""The dress rehearsal of the first real run: the release served locally in its real layouts
(``python -m utils.rehearsal OUT``)."""
