"""Infrastructure the engine talks to: PostgreSQL, artifact directories, object storage."""
