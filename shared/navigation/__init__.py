"""Navigation history: the frontend routes each user visited (usage analytics)."""
