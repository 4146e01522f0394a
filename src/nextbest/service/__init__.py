"""Plain-Python service layer: recommend, picks, feedback. The CLI and the API call it."""
