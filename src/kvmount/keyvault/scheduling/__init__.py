"""When reads run: a mount's fetches on the node's fair, bounded pool, identical reads shared."""
