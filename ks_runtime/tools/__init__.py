"""Command-line tools beside ks-run: the key-slot policy report and the face-stage evaluation."""
