"""One router per resource: search, images, captions and questions, index jobs, and the service itself."""
