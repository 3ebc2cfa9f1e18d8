"""Platform adapters: Slack, Discord and the console, each a thin layer over core.gateway."""
