def main():
    """Placeholder."""
