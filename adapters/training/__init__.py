"""What trains, whatever the kind: head fitting and its quality estimate, background jobs,
and the driver of training worker processes."""
