"""Job transport. The database is the truth; the queue is only a doorbell."""
