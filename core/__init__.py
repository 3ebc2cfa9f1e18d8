"""chat-gateway's platform-free core: settings, messages, thread IDs, memory, agent and gateway."""
