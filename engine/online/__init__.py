"""Online learning while serving: sessions that update a served adapter from a live stream of examples."""
