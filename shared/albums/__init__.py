"""Albums: the ROI-name cache per album and each user's current outcome for an album."""
