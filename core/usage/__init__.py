"""Token usage: what each turn cost (meter), counted per user, channel and workspace (accounting), capped (budgets)."""
