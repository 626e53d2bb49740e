"""How the orchestrator reaches client computers: Ansible (through
ansible-runner), SSH (paramiko) and WinRM (pywinrm). Each adapter sits behind
a small protocol with a fake beside it; library exceptions are translated to
:class:`orchestrator.errors.RemoteError` here, once."""
