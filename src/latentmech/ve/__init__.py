"""Volume-element study: 3D VAE fingerprints of crystal-orientation VEs and their CP responses."""
