"""The dispatcher: claim due deliveries, sign, POST, record."""
