"""Side effects, grouped in classes that receive their clients in __init__."""
