"""Feature presets: named, validated YAML extraction configurations offered to every user."""
