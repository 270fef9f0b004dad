%% kabar_tsung: the helper bench/tsung/run-tsung compiles at run time (erlc, into a temporary
%% directory that comes first on tsung's code path, beside a patched copy of Debian's
%% ts_jabber.erl). It does three things tsung 1.7.0 does not:
%%   - a schedule: every user logs in, then waits until all are online; then the offered rate
%%     steps through KABAR_TSUNG_RATES (total msg/s), each step WARMUP + MEASURE seconds. Each
%%     user sends with exponential think times whose mean is online_users / rate, so the total
%%     is a Poisson stream at the offered rate whatever the number of users;
%%   - delivery counting: every stamp in every read is counted (tsung's message_bidi takes one
%%     latency sample per read, so messages that arrive together in one read are undercounted),
%%     by the measured window its send time falls in, with a latency histogram; error bounces
%%     (type='error'), which carry the original body, are counted as errors, not deliveries;
%%   - the server's CPU time, RSS and context switches, read from /proc/PID at the edges of
%%     each measured window.
%% Everything is written to KABAR_TSUNG_OUT, one row per line ("key parts... values..."), for
%% run-tsung.
-module(kabar_tsung).

-export([online/1, poll_start/1, next/1, sent/2, received/1]).

-define(T, kabar_tsung).
-define(STAMP_RE, "@@@[0-9]+,([0-9]+);([0-9]+);([0-9]+)@@@").
-define(TAIL, 512).

%% --- called from the session (setdynvars sourcetype="erlang") --------------------------------

%% After initial presence: one more user online.
online({_Session, _DynVars}) ->
    ensure(),
    ets:update_counter(?T, online, 1, {online, 0}),
    <<"ok">>.

%% Before the message loop: [phase, think]; "wait" polls again in 0.1 s; "go" comes with the
%% time left until the common start plus a first exponential think time, so that users do not
%% all send their first message at the same instant.
poll_start({_Session, _DynVars}) ->
    ensure(),
    case persistent_term:get({?MODULE, start}, undefined) of
        undefined ->
            [<<"wait">>, "0.1"];
        S ->
            Left = max(0, S - now_ms()) / 1000,
            [<<"go">>, secs(Left + think(0))]
    end.

%% After each message: [phase, think]; "stop" once the next send would fall after the last step.
next({_Session, _DynVars}) ->
    #{step_ms := StepMs, nsteps := N} = cfg(),
    S = persistent_term:get({?MODULE, start}),
    Now = now_ms(),
    K = max(0, (Now - S) div StepMs),
    case K >= N of
        true ->
            [<<"stop">>, "0.001"];
        false ->
            Think = think(K),
            case Now + Think * 1000 >= S + N * StepMs of
                true -> [<<"stop">>, "0.001"];
                false -> [<<"go">>, secs(Think)]
            end
    end.

%% --- called from the patched ts_jabber --------------------------------------------------------

sent(chat, Msg) when is_binary(Msg), byte_size(Msg) > 0 ->
    ensure(),
    ets:update_counter(?T, sent_total, 1, {sent_total, 0}),
    case window(os:system_time(microsecond)) of
        {in, K} -> ets:update_counter(?T, {sent, K}, 1, {{sent, K}, 0});
        _ -> ok
    end,
    ok;
sent(_, _) ->
    ok.

received(closed) ->
    ok;
received(Data) when is_binary(Data) ->
    ensure(),
    NowUs = os:system_time(microsecond),
    Buf = case get(kabar_tail) of
              undefined -> Data;
              Tail -> <<Tail/binary, Data/binary>>
          end,
    ets:update_counter(?T, reads, 1, {reads, 0}),
    End = case re:run(Buf, ?STAMP_RE, [global, {capture, all, index}]) of
              nomatch ->
                  0;
              {match, Matches} ->
                  ets:update_counter(?T, reads_with_stamps, 1, {reads_with_stamps, 0}),
                  Starts = [P || {P, _} <- binary:matches(Buf, <<"<message">>)],
                  lists:foldl(fun(M, _) -> stamp(Buf, M, Starts, NowUs) end, 0, Matches)
          end,
    Rest = binary:part(Buf, End, byte_size(Buf) - End),
    put(kabar_tail, binary:copy(tail(Rest))),
    ok.

%% --- internals ---------------------------------------------------------------------------------

stamp(Buf, [{P, L}, Mega, Sec, Micro], Starts, NowUs) ->
    SentUs = (int(Buf, Mega) * 1000000 + int(Buf, Sec)) * 1000000 + int(Buf, Micro),
    case error_stanza(Buf, P, Starts) of
        true ->
            ets:update_counter(?T, errors, 1, {errors, 0});
        false ->
            ets:update_counter(?T, dlv_total, 1, {dlv_total, 0}),
            case window(SentUs) of
                {in, K} ->
                    ets:update_counter(?T, {dlv, K}, 1, {{dlv, K}, 0}),
                    B = bucket(NowUs - SentUs),
                    ets:update_counter(?T, {lat, K, B}, 1, {{lat, K, B}, 0});
                _ ->
                    ok
            end
    end,
    P + L.

%% Whether the <message ...> tag enclosing the stamp at P says type='error'.
error_stanza(Buf, P, Starts) ->
    case [S || S <- Starts, S < P] of
        [] ->
            false;
        Before ->
            S = lists:last(Before),
            Tag = case binary:match(Buf, <<">">>, [{scope, {S, P - S}}]) of
                      {G, _} -> binary:part(Buf, S, G - S);
                      nomatch -> binary:part(Buf, S, P - S)
                  end,
            binary:match(Tag, [<<"type='error'">>, <<"type=\"error\"">>]) =/= nomatch
    end.

int(Buf, {P, L}) -> binary_to_integer(binary:part(Buf, P, L)).

tail(B) when byte_size(B) =< ?TAIL -> B;
tail(B) -> binary:part(B, byte_size(B) - ?TAIL, ?TAIL).

%% Latency histogram: 16 buckets per power of two of microseconds (about 4.4% wide).
bucket(Us) -> trunc(math:log2(max(Us, 1)) * 16).

%% Which measured window a time (µs since the epoch) falls in.
window(Us) ->
    case persistent_term:get({?MODULE, start}, undefined) of
        undefined ->
            before;
        S ->
            #{step_ms := StepMs, warmup_ms := W, nsteps := N} = cfg(),
            El = Us div 1000 - S,
            if
                El < 0 -> before;
                El div StepMs >= N -> 'after';
                El rem StepMs >= W -> {in, El div StepMs};
                true -> warmup
            end
    end.

%% Exponential think time (s) with mean online_users / rate of step K.
think(K) ->
    #{rates := Rates} = cfg(),
    Online = max(1, ets_get(online)),
    Mean = Online / element(K + 1, Rates),
    -Mean * math:log(1.0 - rand:uniform()).

secs(S) -> float_to_list(float(S), [{decimals, 4}]).

now_ms() -> os:system_time(millisecond).

ets_get(Key) ->
    case ets:lookup(?T, Key) of
        [{_, V}] -> V;
        [] -> 0
    end.

cfg() -> persistent_term:get({?MODULE, cfg}).

env(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        V -> V
    end.

num(S) ->
    try list_to_float(S) catch error:badarg -> float(list_to_integer(S)) end.

ensure() ->
    case ets:whereis(?T) of
        undefined ->
            Caller = self(),
            Pid = spawn(fun() -> owner_init(Caller) end),
            receive {Pid, ready} -> ok end;
        _ ->
            ok
    end.

owner_init(Caller) ->
    try register(kabar_tsung_owner, self()) of
        true ->
            Rates = [list_to_integer(R) || R <- string:tokens(env("KABAR_TSUNG_RATES", "1000"), ",")],
            W = round(num(env("KABAR_TSUNG_WARMUP", "2")) * 1000),
            M = round(num(env("KABAR_TSUNG_MEASURE", "8")) * 1000),
            Cfg = #{rates => list_to_tuple(Rates), nsteps => length(Rates), warmup_ms => W,
                    measure_ms => M, step_ms => W + M,
                    users => list_to_integer(env("KABAR_TSUNG_USERS", "1000")),
                    login_timeout_ms => 1000 * list_to_integer(env("KABAR_TSUNG_LOGIN_TIMEOUT", "120")),
                    pid => env("KABAR_TSUNG_PID", "0"),
                    out => env("KABAR_TSUNG_OUT", "kabar_tsung.out")},
            persistent_term:put({?MODULE, cfg}, Cfg),
            ets:new(?T, [named_table, public, set, {write_concurrency, true}]),
            %% Whether tsung runs the patched plugin (from the same directory as this module).
            Patched = filename:dirname(code:which(ts_jabber)) =:= filename:dirname(code:which(?MODULE)),
            ets:insert(?T, {plugin_patched, case Patched of true -> 1; false -> 0 end}),
            Caller ! {self(), ready},
            owner(Cfg)
    catch
        error:badarg ->
            wait_table(),
            Caller ! {self(), ready}
    end.

wait_table() ->
    case ets:whereis(?T) of
        undefined -> timer:sleep(1), wait_table();
        _ -> ok
    end.

%% The schedule: wait for every user (or the login timeout), fix the common start 1 s ahead,
%% sample the server at the edges of each measured window, write the results.
owner(#{users := Users, login_timeout_ms := LT, nsteps := N, step_ms := StepMs,
        warmup_ms := W} = Cfg) ->
    T0 = now_ms(),
    wait_logins(Users, T0 + LT, Cfg),
    Online = ets_get(online),
    S = now_ms() + 1000,
    ets:insert(?T, [{login_ms, S - 1000 - T0}, {online_at_start, Online}, {start_ms, S}]),
    persistent_term:put({?MODULE, start}, S),
    write_out(Cfg),
    lists:foreach(
      fun(K) ->
              sleep_until(S + K * StepMs + W),
              ets:insert(?T, {{proc, K, 0}, proc_sample(Cfg)}),
              sleep_until(S + (K + 1) * StepMs),
              ets:insert(?T, {{proc, K, 1}, proc_sample(Cfg)}),
              write_out(Cfg)
      end, lists:seq(0, N - 1)),
    %% Messages of the last window still in flight: written again after a drain, and every
    %% second after that until tsung stops this VM.
    sleep_until(S + N * StepMs + 2500),
    tail_loop(Cfg).

tail_loop(Cfg) ->
    write_out(Cfg),
    timer:sleep(1000),
    tail_loop(Cfg).

wait_logins(Users, Deadline, Cfg) ->
    case ets_get(online) >= Users orelse now_ms() >= Deadline of
        true -> ok;
        false -> timer:sleep(50), wait_logins(Users, Deadline, Cfg)
    end.

sleep_until(Ms) ->
    case Ms - now_ms() of
        D when D > 0 -> timer:sleep(D);
        _ -> ok
    end.

%% {cpu ticks (utime + stime), RSS KiB, context switches of all threads, wall ms}
proc_sample(#{pid := Pid}) ->
    Dir = "/proc/" ++ Pid,
    Ticks = case file:read_file(Dir ++ "/stat") of
                {ok, Stat} ->
                    [_, AfterComm] = string:split(Stat, ")", trailing),
                    F = string:lexemes(AfterComm, " "),
                    %% Fields after the command start at 3 (state): utime is 14, stime 15.
                    binary_to_integer(lists:nth(12, F)) + binary_to_integer(lists:nth(13, F));
                _ ->
                    -1
            end,
    Rss = status_value(Dir ++ "/status", <<"VmRSS:">>),
    Ctx = case file:list_dir(Dir ++ "/task") of
              {ok, Tasks} ->
                  lists:sum([status_value(Dir ++ "/task/" ++ T ++ "/status", Key)
                             || T <- Tasks,
                                Key <- [<<"voluntary_ctxt_switches:">>,
                                        <<"nonvoluntary_ctxt_switches:">>]]);
              _ ->
                  -1
          end,
    {Ticks, Rss, Ctx, now_ms()}.

status_value(File, Key) ->
    case file:read_file(File) of
        {ok, B} ->
            case [L || L <- binary:split(B, <<"\n">>, [global]), binary:match(L, Key) =:= {0, byte_size(Key)}] of
                [Line | _] ->
                    [V | _] = string:lexemes(binary:part(Line, byte_size(Key), byte_size(Line) - byte_size(Key)), " \t"),
                    binary_to_integer(V);
                [] ->
                    -1
            end;
        _ ->
            -1
    end.

write_out(#{out := Out, rates := Rates, warmup_ms := W, measure_ms := M, users := U}) ->
    Rows = [{cfg_rates, list_to_tuple(tuple_to_list(Rates))}, {cfg_warmup_ms, W},
            {cfg_measure_ms, M}, {cfg_users, U}, {written_ms, now_ms()}
            | lists:sort(ets:tab2list(?T))],
    Text = [[lists:join(" ", [tok(X) || X <- flat(K) ++ flat(V)]), "\n"] || {K, V} <- Rows],
    Tmp = Out ++ ".tmp",
    ok = file:write_file(Tmp, Text),
    ok = file:rename(Tmp, Out).

%% One line per row: the key's parts, then the value's, separated by spaces.
flat(T) when is_tuple(T) -> tuple_to_list(T);
flat(X) -> [X].

tok(A) when is_atom(A) -> atom_to_list(A);
tok(I) when is_integer(I) -> integer_to_list(I);
tok(F) when is_float(F) -> float_to_list(F, [{decimals, 3}]).
