"""What is checked in an archive, and in the archives of a batch as one restore set."""
