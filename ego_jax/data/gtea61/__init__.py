"""tfds builder for the GTEA61 release (course PNG layout and the authors JPEG layout)."""
