"""Small applications the tests run as real processes."""
