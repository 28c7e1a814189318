"""Built-in synthetic worlds (deterministic from a seed, fast, no files needed).

Three worlds:

* :func:`make_ibl_like_world` — multi-animal, multi-region sessions shaped like
  IBL Neuropixels data. Each region has its own latent dynamics (damped
  rotations), coupled along a fixed region graph (VISp -> LP -> MOs,
  CA1 <-> PO), driven by the task: the stimulus enters VISp, the block prior
  enters LP, the choice/movement enters MOs, arousal enters PO. Units read
  out mostly their own region's latents (log-linear Poisson), a little of the
  coupled regions'. Wheel speed follows MOs, whisker motion energy follows PO.
  So neuron, temporal, intra-region and inter-region prediction and behaviour
  decoding all carry signal, and differ. Animals share the dynamics and
  differ in units, region subsets and read-out weights.
* :func:`make_hub_network` — a spiking network (Poisson GLM) with known
  directed connectivity and a few hub neurons, for the connectivity-recovery
  experiment; the ground-truth weights ``W[i, j]`` (source j -> target i) are
  returned and stored in ``session.extra["true_weights"]``.
* :func:`make_calcium_world` — 2-photon-like activity: spikes of direction-tuned
  and running-modulated cells through a calcium kernel plus noise, sampled at
  a frame rate, with deconvolution-like events and running speed.

Units: seconds for times, Hz for rates, rad/s for wheel speed, cm/s for
running speed, arbitrary units for motion energy and fluorescence.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from ..schema import Session

REGIONS = ("VISp", "LP", "MOs", "CA1", "PO")
# directed coupling between region latents: (source, target)
REGION_GRAPH = (("VISp", "LP"), ("LP", "MOs"), ("CA1", "PO"), ("PO", "CA1"))
CONTRASTS = np.array([0.0, 0.0625, 0.125, 0.25, 1.0])


def _rotation(rng, dim, dt, freq_range=(1.0, 4.0), decay=0.5):
    """Damped rotation matrix (dim even) for latent dynamics at step ``dt`` s; ``decay`` in 1/s."""
    A = np.zeros((dim, dim))
    for k in range(0, dim, 2):
        w = 2 * np.pi * rng.uniform(*freq_range) * dt
        A[k:k + 2, k:k + 2] = np.exp(-decay * dt) * np.array([[np.cos(w), -np.sin(w)], [np.sin(w), np.cos(w)]])
    return A


class _World:
    """Shared (animal-independent) dynamics of the IBL-like world."""

    def __init__(self, seed: int, latent_dim: int, dt: float):
        rng = np.random.default_rng([seed, 12345])
        self.dt, self.d = dt, latent_dim
        self.A = {r: _rotation(rng, latent_dim, dt) for r in REGIONS}
        self.C = {edge: 0.6 * dt * rng.standard_normal((latent_dim, latent_dim)) for edge in REGION_GRAPH}
        self.B = {r: rng.standard_normal(latent_dim) for r in REGIONS}  # input gain per region


def _task(rng, n_trials, iti=(1.0, 1.6), block_len=(20, 50)):
    """Trial table of an IBL-like task (times in seconds)."""
    prob_left = np.empty(n_trials)
    i, p = 0, rng.choice([0.2, 0.8])
    while i < n_trials:
        n = int(rng.integers(*block_len))
        prob_left[i:i + n] = p
        i, p = i + n, 1.0 - p
    left = rng.random(n_trials) < prob_left
    contrast = rng.choice(CONTRASTS, n_trials)
    signed = np.where(left, contrast, -contrast)  # + = stimulus on the left
    # psychometric choice: +1 = reports "left"
    p_left_choice = 1 / (1 + np.exp(-(6.0 * signed + 1.5 * (prob_left - 0.5) * 2)))
    choice = np.where(rng.random(n_trials) < p_left_choice, 1.0, -1.0)
    correct_side = np.where(signed != 0, np.sign(signed), np.where(left, 1.0, -1.0))
    feedback = np.where(choice == correct_side, 1.0, -1.0)
    rt = np.clip(0.15 + rng.exponential(0.2, n_trials) + 0.2 * (1 - contrast), 0.1, 1.1)
    gaps = 2.0 + rng.uniform(*iti, n_trials)
    stim_on = 1.0 + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    move = stim_on + rt
    fb = move + rng.uniform(0.1, 0.3, n_trials)
    return {
        "intervals_start": stim_on - 0.5,
        "intervals_stop": stim_on + 1.5,
        "goCue_times": stim_on + 0.01,
        "stimOn_times": stim_on,
        "firstMovement_times": move,
        "feedback_times": fb,
        "response_times": fb - 0.01,
        "contrastLeft": np.where(left, contrast, 0.0),
        "contrastRight": np.where(left, 0.0, contrast),
        "signed_contrast": signed,
        "probabilityLeft": prob_left,
        "choice": choice,
        "feedbackType": feedback,
        "reaction_time": rt,
    }


def _events_to_grid(times, values, n_steps, dt, duration):
    """Piecewise-constant input on the simulation grid: value k from times[k, 0] to times[k, 1]."""
    u = np.zeros(n_steps)
    start = np.clip((times[:, 0] / dt).astype(int), 0, n_steps)
    stop = np.clip((times[:, 1] / dt).astype(int), 0, n_steps)
    delta = np.zeros(n_steps + 1)
    np.add.at(delta, start, values)
    np.add.at(delta, stop, -values)
    u[:] = np.cumsum(delta)[:-1]
    return u


def _poisson_spike_times(rng, log_rate, dt, t0=0.0):
    """Spike times (sorted) and unit ids from log rates (n_steps, N) in log Hz on a ``dt`` s grid."""
    counts = rng.poisson(np.exp(log_rate) * dt)
    step, unit = np.nonzero(counts)
    reps = counts[step, unit]
    step, unit = np.repeat(step, reps), np.repeat(unit, reps)
    times = t0 + (step + rng.random(len(step))) * dt
    order = np.argsort(times, kind="stable")
    return times[order], unit[order].astype(np.int64)


def make_ibl_like_world(
    n_animals: int = 4,
    sessions_per_animal: int = 1,
    n_trials: int = 120,
    units_per_region: tuple[int, int] = (8, 16),
    min_regions: int = 3,
    latent_dim: int = 4,
    dt: float = 0.01,
    seed: int = 0,
) -> list[Session]:
    """IBL-like multi-animal, multi-region sessions (see module docstring).

    Args:
        n_animals: subjects ``synth-mouse-00`` ...; each gets its own units.
        sessions_per_animal: sessions per subject (same units reused within a subject).
        n_trials: trials per session (about 3.5 s each).
        units_per_region: (low, high) units per recorded region.
        min_regions: each session records a random subset of at least this many regions.
        latent_dim: latent dimensions per region (even).
        dt: simulation step in seconds.
        seed: everything is a deterministic function of the seed.
    """
    world = _World(seed, latent_dim, dt)
    sessions = []
    for a in range(n_animals):
        arng = np.random.default_rng([seed, a])
        n_reg = int(arng.integers(min_regions, len(REGIONS) + 1))
        regions = sorted(arng.choice(len(REGIONS), n_reg, replace=False))
        regions = [REGIONS[i] for i in regions]
        n_per = arng.integers(units_per_region[0], units_per_region[1] + 1, len(regions))
        unit_region = np.repeat(np.array(regions), n_per)
        N = len(unit_region)
        baseline = np.log(arng.uniform(2.0, 15.0, N))  # log Hz
        own = 0.6 * arng.standard_normal((N, latent_dim)) / np.sqrt(latent_dim) * 2
        cross = 0.15 * arng.standard_normal((N, latent_dim))
        depth = np.sort(arng.uniform(0, 3840, N))[::-1]
        for s in range(sessions_per_animal):
            srng = np.random.default_rng([seed, a, s, 7])
            sessions.append(_simulate_session(world, srng, f"synth-mouse-{a:02d}", f"synth-{a:02d}-{s:02d}",
                                              unit_region, regions, baseline, own, cross, depth, n_trials))
    return sessions


def _simulate_session(world, rng, subject, sid, unit_region, regions, baseline, own, cross, depth, n_trials):
    dt, d = world.dt, world.d
    trials = _task(rng, n_trials)
    duration = float(trials["intervals_stop"][-1] + 1.0)
    n_steps = int(duration / dt)
    stim = _events_to_grid(np.c_[trials["stimOn_times"], trials["feedback_times"]], trials["signed_contrast"], n_steps, dt, duration)
    move = _events_to_grid(np.c_[trials["firstMovement_times"], trials["firstMovement_times"] + 0.35], trials["choice"], n_steps, dt, duration)
    prior = _events_to_grid(np.c_[trials["intervals_start"], trials["intervals_stop"]], trials["probabilityLeft"] - 0.5, n_steps, dt, duration)
    arousal = lfilter([1 - np.exp(-dt / 2.0)], [1, -np.exp(-dt / 2.0)], rng.standard_normal(n_steps)) * 8
    inputs = {"VISp": 3.0 * stim, "LP": 2.0 * prior, "MOs": 3.0 * move, "PO": arousal, "CA1": 0.5 * arousal}
    # simulate all regions jointly (unrecorded ones drive recorded ones): one
    # block transition matrix over the stacked latents, one step per time step
    R = len(REGIONS)
    A = np.zeros((R * d, R * d))
    for i, r in enumerate(REGIONS):
        A[i * d:(i + 1) * d, i * d:(i + 1) * d] = world.A[r]
    for (src, dst), C in world.C.items():
        i, j = REGIONS.index(dst), REGIONS.index(src)
        A[i * d:(i + 1) * d, j * d:(j + 1) * d] = C
    drive = np.concatenate([dt * 8.0 * inputs[r][:, None] * world.B[r][None, :]
                            + 0.15 * np.sqrt(dt) * rng.standard_normal((n_steps, d)) for r in REGIONS], axis=1)
    Z = np.zeros((n_steps, R * d))
    for t in range(1, n_steps):
        Z[t] = A @ Z[t - 1] + drive[t]
    z = {r: Z[:, i * d:(i + 1) * d] for i, r in enumerate(REGIONS)}
    # log rates: own region latents + a little of the coupled regions
    Z_own = np.stack([z[r] for r in unit_region], axis=1)  # (T, N, d)
    partner = {r: next((s for s, t in REGION_GRAPH if t == r), r) for r in REGIONS}
    Z_cross = np.stack([z[partner[r]] for r in unit_region], axis=1)
    log_rate = baseline[None, :] + np.einsum("tnd,nd->tn", Z_own, own) + np.einsum("tnd,nd->tn", Z_cross, cross)
    log_rate = np.minimum(log_rate, np.log(200.0))
    spike_times, spike_units = _poisson_spike_times(rng, log_rate, dt)
    t_grid = (np.arange(n_steps) + 0.5) * dt
    wheel = 6.0 * (z["MOs"] @ world.B["MOs"]) / np.linalg.norm(world.B["MOs"]) + 0.05 * rng.standard_normal(n_steps)
    whisker = np.log1p(np.exp(2.0 * z["PO"][:, 0] + 1.0)) + 0.05 * rng.standard_normal(n_steps)
    units = {
        "unit_id": np.array([f"{subject}-u{i:03d}" for i in range(len(unit_region))]),
        "region": unit_region.astype(str),
        "depth_um": depth,
        "quality": (rng.random(len(unit_region)) < 0.7).astype(np.int64),
    }
    trials_out = {k: v for k, v in trials.items() if k != "signed_contrast"}
    return Session(
        session_id=sid, subject_id=subject, units=units, trials=trials_out, modality="spikes",
        spike_times=spike_times, spike_units=spike_units,
        behavior={"wheel_speed": (t_grid, wheel), "whisker_motion_energy": (t_grid, whisker)},
        behavior_units={"wheel_speed": "rad/s", "whisker_motion_energy": "a.u."},
        stimulus={"signed_contrast": (t_grid, stim)},
        recording_end=duration, source=f"synthetic:ibl_like(session={sid})",
        extra={"world": "ibl_like", "recorded_regions": list(regions)},
    )


def make_hub_network(
    n_neurons: int = 30,
    n_hubs: int = 3,
    duration: float = 300.0,
    dt: float = 0.005,
    p_edge: float = 0.06,
    hub_out_degree: float = 0.4,
    tau: float = 0.01,
    window_length: float = 2.0,
    delays: tuple[float, float] | None = None,
    common_input: float = 0.0,
    common_tau: float = 1.0,
    seed: int = 0,
) -> tuple[Session, np.ndarray]:
    """Spiking network with known directed connectivity and hub neurons.

    Discrete-time Poisson GLM at step ``dt`` s: ``log rate_i(t) = b_i +
    sum_j W[i, j] h_j(t)``, where ``h_j`` is neuron j's spike train filtered by
    an exponential kernel of ``tau`` s (strictly past spikes). Hubs (the first
    ``n_hubs`` after a seeded permutation) project to ``hub_out_degree`` of all
    neurons. Trials are consecutive ``window_length`` s windows (align on
    ``start_time``).

    Harder variants: ``delays=(lo, hi)`` gives every edge its own conduction delay drawn uniformly in
    ``[lo, hi]`` seconds (rounded to ``dt``): ``h_j`` enters target i ``d_ij`` later; ``common_input > 0``
    adds a shared slow drive (an Ornstein-Uhlenbeck process of time constant ``common_tau`` s, unit variance)
    to every neuron's log rate with a random loading of s.d. ``common_input``, so neurons correlate without
    being connected (where correlation-based estimates fail).

    Returns: ``(session, W)`` with ``W`` (N, N), ``W[i, j]`` = weight from source j to target i.
    """
    rng = np.random.default_rng([seed, 99])
    N = n_neurons
    W = np.where(rng.random((N, N)) < p_edge, rng.uniform(0.6, 1.2, (N, N)), 0.0)
    hubs = rng.permutation(N)[:n_hubs]
    for h in hubs:
        targets = rng.random(N) < hub_out_degree
        W[targets, h] = rng.uniform(1.0, 1.6, targets.sum())
    inhibitory = rng.random(N) < 0.2
    inhibitory[hubs] = False
    W[:, inhibitory] *= -1.5
    np.fill_diagonal(W, 0.0)
    b = np.log(rng.uniform(4.0, 10.0, N))
    n_steps = int(round(duration / dt))
    decay = np.exp(-dt / tau)
    lag = np.zeros((N, N), dtype=np.int64)  # delay of every edge in steps (0 = the next step, as without delays)
    if delays is not None:
        lag = np.round(rng.uniform(delays[0], delays[1], (N, N)) / dt).astype(np.int64)
    D = int(lag.max()) + 1
    by_lag = [np.where(lag == d, W, 0.0) for d in range(D)]
    drive = np.zeros((n_steps, N))
    if common_input > 0:
        a = np.exp(-dt / common_tau)
        s_t = lfilter([np.sqrt(1 - a * a)], [1, -a], rng.standard_normal(n_steps))
        drive = common_input * rng.standard_normal(N)[None, :] * s_t[:, None]
    hist = np.zeros((D, N))  # filtered traces of the last D steps: hist[d] = h after step t - 1 - d
    counts = np.zeros((n_steps, N), dtype=np.int64)
    u = rng.random((n_steps, N))
    for t in range(n_steps):  # one step per time step
        rate = np.exp(np.minimum(b + sum(by_lag[d] @ hist[d] for d in range(D)) + drive[t], np.log(150.0)))
        p = 1.0 - np.exp(-rate * dt)
        counts[t] = u[t] < p
        h = decay * hist[0] + counts[t]
        hist = np.roll(hist, 1, axis=0)
        hist[0] = h
    step, unit = np.nonzero(counts)
    times = (step + rng.random(len(step))) * dt
    order = np.lexsort((unit, times))
    trials = _consecutive(0.0, duration, window_length)
    session = Session(
        session_id=f"hubnet-{seed}", subject_id=f"hubnet-{seed}",
        units={"unit_id": np.array([f"n{i:03d}" for i in range(N)]), "region": np.array(["unknown"] * N),
               "is_hub": np.isin(np.arange(N), hubs).astype(np.int64)},
        trials=trials, modality="spikes", spike_times=times[order], spike_units=unit[order].astype(np.int64),
        recording_end=duration, source=f"synthetic:hub_network(seed={seed})",
        extra={"world": "hub_network", "true_weights": W.tolist(), "hubs": sorted(int(x) for x in hubs), "dt": dt, "tau": tau,
               "delays_s": None if delays is None else (lag * dt).tolist(), "common_input": common_input},
    )
    return session, W


def _consecutive(t0, t1, length):
    from ..records import consecutive_windows

    return consecutive_windows(t0, t1, length)


def make_calcium_world(
    n_animals: int = 2,
    n_cells: int = 40,
    n_trials: int = 60,
    frame_rate: float = 10.0,
    tau_decay: float = 0.5,
    noise: float = 0.1,
    seed: int = 0,
) -> list[Session]:
    """2-photon-like sessions (modality ``calcium``, deconvolution-like events).

    Each trial shows a drifting grating in one of 8 directions (degrees) for
    1 s starting at ``stimOn_times``; cells are direction-tuned (von Mises) and
    modulated by running speed (cm/s, a smoothed random process). Spikes
    (10 ms steps) are convolved with an exponential calcium kernel
    (``tau_decay`` s), sampled at ``frame_rate`` Hz with Gaussian noise
    (``noise`` dF/F units); ``activity`` holds the deconvolution-like events
    ``max(0, c[t] - exp(-1/(rate tau)) c[t-1])``.
    """
    sessions = []
    for a in range(n_animals):
        rng = np.random.default_rng([seed, a, 2])
        dt = 0.01
        gaps = 3.0 + rng.uniform(0, 0.5, n_trials)
        stim_on = 2.0 + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
        direction = rng.integers(0, 8, n_trials) * 45.0
        duration = float(stim_on[-1] + 4.0)
        n_steps = int(duration / dt)
        t = (np.arange(n_steps) + 0.5) * dt
        pref = rng.uniform(0, 360, n_cells)
        kappa = rng.uniform(1.0, 3.0, n_cells)
        on = _events_to_grid(np.c_[stim_on, stim_on + 1.0], np.ones(n_trials), n_steps, dt, duration) > 0
        dir_grid = _events_to_grid(np.c_[stim_on, stim_on + 1.0], direction, n_steps, dt, duration)
        run = np.abs(lfilter([1 - np.exp(-dt / 1.5)], [1, -np.exp(-dt / 1.5)], rng.standard_normal(n_steps)) * 60)
        run_gain = rng.uniform(-0.02, 0.05, n_cells)
        tuning = np.exp(kappa[None, :] * (np.cos(np.deg2rad(dir_grid[:, None] - pref[None, :])) - 1))
        rate = 0.5 + 15.0 * on[:, None] * tuning + np.maximum(0, run_gain[None, :] * run[:, None] * 5)
        spikes = rng.poisson(rate * dt).astype(np.float64)
        kernel_decay = np.exp(-dt / tau_decay)
        calcium = lfilter([1.0], [1.0, -kernel_decay], spikes, axis=0)
        frame_step = int(round(1.0 / (frame_rate * dt)))
        frames = np.arange(0, n_steps, frame_step)
        frame_times = t[frames]
        f = calcium[frames] + noise * rng.standard_normal((len(frames), n_cells))
        decay_f = np.exp(-1.0 / (frame_rate * tau_decay))
        events = np.maximum(0.0, f[1:] - decay_f * f[:-1])
        events = np.vstack([np.maximum(f[:1], 0.0), events]).astype(np.float32)
        subject = f"synth-2p-mouse-{a:02d}"
        sessions.append(Session(
            session_id=f"synth-2p-{a:02d}", subject_id=subject,
            units={"unit_id": np.array([f"{subject}-roi{i:03d}" for i in range(n_cells)]),
                   "region": np.array(["VISp"] * (n_cells // 2) + ["VISl"] * (n_cells - n_cells // 2)),
                   "preferred_direction": pref},
            trials={"stimOn_times": stim_on, "stimOff_times": stim_on + 1.0, "stimulus_direction": direction},
            modality="calcium", frame_times=frame_times, activity=events, activity_kind="deconvolved",
            behavior={"running_speed": (t, run)}, behavior_units={"running_speed": "cm/s"},
            stimulus={"direction_cos": (t, np.where(on, np.cos(np.deg2rad(dir_grid)), 0.0)),
                      "direction_sin": (t, np.where(on, np.sin(np.deg2rad(dir_grid)), 0.0))},
            source=f"synthetic:calcium(animal={a}, seed={seed})",
            extra={"world": "calcium", "frame_rate": frame_rate},
        ))
    return sessions


def make_drift_world(
    n_animals: int = 10,
    duration: float = 240.0,
    units: tuple[int, int] = (30, 50),
    latent_dim: int = 4,
    shared_drift: float = 0.5,
    unit_drift: float = 0.3,
    drift_period: tuple[float, float] = (120.0, 480.0),
    dt: float = 0.01,
    window_length: float = 2.0,
    seed: int = 0,
) -> list[Session]:
    """Continuous spiking recordings whose firing rates drift slowly, cut into back-to-back windows.

    Per animal: ``latent_dim`` latent factors (damped rotations driven by noise, shared dynamics across
    animals) read out log-linearly by each unit; on top, a **shared** slow drift ``shared_drift * sin(2 pi t /
    P + phi)`` of every unit's log rate (a global gain change, e.g. arousal or depth of anaesthesia: visible in
    the held-in units) and a **per-unit** slow drift of amplitude ``unit_drift`` with its own period and phase
    (invisible to other units).  Periods are drawn from ``drift_period`` [s], so the test block (the end of the
    recording, with a contiguous split) sits at drift levels the training block saw only partly.  Trials are
    consecutive ``window_length`` s windows (align on ``start_time``).  ``session.extra["drift"]`` records the
    drift parameters.
    """
    rng0 = np.random.default_rng([seed, 4242])
    A = _rotation(rng0, latent_dim, dt, freq_range=(0.5, 2.0), decay=1.0)
    n_steps = int(round(duration / dt))
    t = (np.arange(n_steps) + 0.5) * dt
    sessions = []
    for a in range(n_animals):
        rng = np.random.default_rng([seed, a, 4243])
        N = int(rng.integers(units[0], units[1] + 1))
        z = np.zeros((n_steps, latent_dim))
        noise = 0.6 * np.sqrt(dt) * rng.standard_normal((n_steps, latent_dim))
        for k in range(1, n_steps):  # one step per time step (latent dynamics)
            z[k] = A @ z[k - 1] + noise[k]
        z /= max(z.std(), 1e-9)
        C = 0.5 * rng.standard_normal((N, latent_dim))
        baseline = np.log(rng.uniform(3.0, 15.0, N))
        period = rng.uniform(*drift_period)
        shared = shared_drift * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        u_period = rng.uniform(*drift_period, N)
        u_phase = rng.uniform(0, 2 * np.pi, N)
        u_amp = unit_drift * rng.uniform(0.5, 1.5, N)
        per_unit = u_amp[None, :] * np.sin(2 * np.pi * t[:, None] / u_period[None, :] + u_phase[None, :])
        log_rate = np.minimum(baseline[None, :] + z @ C.T + shared[:, None] + per_unit, np.log(150.0))
        times, unit = _poisson_spike_times(rng, log_rate, dt)
        subject = f"drift-mouse-{a:02d}"
        sessions.append(Session(
            session_id=f"drift-{a:02d}-00", subject_id=subject,
            units={"unit_id": np.array([f"{subject}-u{i:03d}" for i in range(N)]),
                   "region": np.array(["unknown"] * N)},
            trials=_consecutive(0.0, duration, window_length), modality="spikes", spike_times=times,
            spike_units=unit, recording_end=duration, source=f"synthetic:drift(animal={a}, seed={seed})",
            extra={"world": "drift", "drift": {"shared_amplitude": shared_drift, "shared_period_s": period,
                                               "unit_amplitude": unit_drift}},
        ))
    return sessions


# --------------------------------------------------------------------------- one latent world, two modalities
TWO_MODALITY_REGIONS = ("VISp", "LP", "MOs")
DIRECTIONS = np.array([0.0, 90.0, 180.0, 270.0])  # degrees


def make_two_modality_world(
    n_spike_animals: int = 5,
    n_calcium_animals: int = 5,
    n_trials: int = 150,
    units_per_region: tuple[int, int] = (8, 14),
    latent_dim: int = 4,
    frame_rate: float = 10.0,
    tau_decay: float = 0.4,
    dff_noise: float = 0.05,
    dt: float = 0.01,
    seed: int = 0,
) -> list[Session]:
    """One latent population recorded with two methods in different animals (the mixed-modality study).

    Every animal performs the same task (a grating of one of 4 directions for 1 s from ``stimOn_times``; a left
    / right choice that follows the grating's horizontal component, ``choice = sign(cos(direction) + 0.8
    noise)``, reported by a movement 0.25-0.5 s after onset; running speed [cm/s] a smoothed random process
    plus a burst after the movement), and the same three regions (VISp, LP, MOs) carry latent dynamics of
    one shared law (damped rotations, VISp -> LP -> MOs coupling; the grating drives VISp, running speed LP,
    the choice MOs).  Each animal has its own units, read-out weights and baselines (log-linear rates [Hz]).

    * spiking animals (``synth-spk-XX``): Poisson spike times, trials column ``stimulus_direction``;
    * 2-photon animals (``synth-2p2-XX``): the same kind of spikes through a calcium kernel (``tau_decay`` s),
      sampled at ``frame_rate`` Hz as dF/F (``0.1 x calcium + dff_noise`` noise); this rig names the trials
      column ``direction`` (as some NWB files do), so evaluation maps it with the task option ``column_map``.

    Both get behaviour ``running_speed`` and stimulus ``direction_cos`` / ``direction_sin`` (0 off stimulus).
    Deterministic in ``seed``; the world's law does not depend on the animal counts.
    """
    rng_w = np.random.default_rng([seed, 4242])
    d, R = latent_dim, len(TWO_MODALITY_REGIONS)
    A = np.zeros((R * d, R * d))
    for i in range(R):
        A[i * d:(i + 1) * d, i * d:(i + 1) * d] = _rotation(rng_w, d, dt, freq_range=(0.7, 2.5), decay=0.8)
    for src, dst in ((0, 1), (1, 2)):
        A[dst * d:(dst + 1) * d, src * d:(src + 1) * d] = 0.5 * dt * rng_w.standard_normal((d, d))
    B_stim = rng_w.standard_normal((d, 2))
    B_run = rng_w.standard_normal(d)
    B_choice = rng_w.standard_normal(d)
    sessions = []
    for a in range(n_spike_animals + n_calcium_animals):
        calcium = a >= n_spike_animals
        k = a - n_spike_animals if calcium else a
        rng = np.random.default_rng([seed, a, 77])
        gaps = 3.0 + rng.uniform(0.0, 0.5, n_trials)
        stim_on = 1.5 + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
        direction = rng.choice(DIRECTIONS, n_trials)
        choice = np.where(np.cos(np.deg2rad(direction)) + 0.8 * rng.standard_normal(n_trials) > 0, 1.0, -1.0)
        move = stim_on + rng.uniform(0.25, 0.5, n_trials)
        n_steps = int(round((stim_on[-1] + 3.0) / dt))
        duration = n_steps * dt
        t = (np.arange(n_steps) + 0.5) * dt
        on = np.c_[stim_on, stim_on + 1.0]
        cos_d = _events_to_grid(on, np.cos(np.deg2rad(direction)), n_steps, dt, duration)
        sin_d = _events_to_grid(on, np.sin(np.deg2rad(direction)), n_steps, dt, duration)
        move_in = _events_to_grid(np.c_[move, move + 0.35], choice, n_steps, dt, duration)
        burst = _events_to_grid(np.c_[move, move + 0.6], np.ones(n_trials), n_steps, dt, duration)
        noise = lfilter([1 - np.exp(-dt / 1.0)], [1, -np.exp(-dt / 1.0)], rng.standard_normal(n_steps)) * 25
        run = np.abs(noise) + 15.0 * burst  # cm/s
        drive = np.zeros((n_steps, R * d))
        drive[:, 0:d] = dt * 10.0 * (np.c_[cos_d, sin_d] @ B_stim.T)
        drive[:, d:2 * d] = dt * 0.15 * run[:, None] * B_run[None, :]
        drive[:, 2 * d:] = dt * 10.0 * move_in[:, None] * B_choice[None, :]
        drive += 0.15 * np.sqrt(dt) * rng.standard_normal((n_steps, R * d))
        Z = np.zeros((n_steps, R * d))
        for s in range(1, n_steps):  # one step per time step (coupled regions)
            Z[s] = A @ Z[s - 1] + drive[s]
        n_per = rng.integers(units_per_region[0], units_per_region[1] + 1, R)
        unit_region = np.repeat(np.array(TWO_MODALITY_REGIONS), n_per)
        ridx = np.repeat(np.arange(R), n_per)
        N = len(unit_region)
        w = 1.2 * rng.standard_normal((N, d)) / np.sqrt(d)
        Z_own = np.stack([Z[:, r * d:(r + 1) * d] for r in ridx], axis=1)  # (T, N, d)
        log_rate = np.log(rng.uniform(2.0, 10.0, N))[None, :] + np.einsum("tnd,nd->tn", Z_own, w)
        log_rate = np.minimum(log_rate, np.log(150.0))
        subject = f"synth-{'2p2' if calcium else 'spk'}-{k:02d}"
        trials = {"stimOn_times": stim_on, "stimOff_times": stim_on + 1.0, "firstMovement_times": move,
                  "choice": choice, ("direction" if calcium else "stimulus_direction"): direction}
        common = dict(session_id=f"{subject}-s0", subject_id=subject, trials=trials,
                      behavior={"running_speed": (t, run)}, behavior_units={"running_speed": "cm/s"},
                      stimulus={"direction_cos": (t, cos_d), "direction_sin": (t, sin_d)},
                      source=f"synthetic:two_modality(animal={a}, seed={seed})")
        units = {"unit_id": np.array([f"{subject}-{'roi' if calcium else 'u'}{i:03d}" for i in range(N)]),
                 "region": unit_region.astype(str)}
        if not calcium:
            spike_times, spike_units = _poisson_spike_times(rng, log_rate, dt)
            sessions.append(Session(units=units, modality="spikes", spike_times=spike_times,
                                    spike_units=spike_units, recording_end=duration,
                                    extra={"world": "two_modality"}, **common))
            continue
        spikes = rng.poisson(np.exp(log_rate) * dt).astype(np.float64)
        conc = lfilter([1.0], [1.0, -np.exp(-dt / tau_decay)], spikes, axis=0)
        frames = np.arange(0, n_steps, int(round(1.0 / (frame_rate * dt))))
        dff = 0.1 * conc[frames] + dff_noise * rng.standard_normal((len(frames), N))
        sessions.append(Session(units=units, modality="calcium", frame_times=t[frames],
                                activity=dff.astype(np.float32), activity_kind="dff",
                                extra={"world": "two_modality", "frame_rate": frame_rate}, **common))
    return sessions
