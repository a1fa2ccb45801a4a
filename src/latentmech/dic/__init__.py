"""HR-DIC study (paper 000): raw maps → preprocessing → windows and slip events → VAEs → properties."""
