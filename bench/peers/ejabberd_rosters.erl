%% Writes ejabberd's rosters for bench accounts, straight into the running node through
%% mod_roster:set_roster/1: the state that kabar-bench's subscribe mode leaves behind once every
%% subscription is approved — each user has its ring neighbours (the same ring as kabar-bench's
%% contact_of: +1, -1, +2, -2, ... up to contacts/2 on each side) with subscription "both".
%%
%% Why not through subscriptions: ejabberd 23.01 approved about 110 subscriptions/s with
%% 100-contact rosters (20,000 took 183 s of the 2026-11-25 run; 1,000 x 10 took 42 s). What is
%% measured afterwards (logins loading these rosters, presence fan-out) is unchanged.
%%
%% bench/run compiles this with erlc and runs it in a node of its own:
%%   erl -sname NAME@localhost -setcookie COOKIE -noshell -pa DIR \
%%       -run ejabberd_rosters main NODE DOMAIN PREFIX USERS CONTACTS
%% The users must be offline.
-module(ejabberd_rosters).
-export([main/1]).

main([NodeS, Domain, Prefix, UsersS, ContactsS]) ->
    Node = list_to_atom(NodeS),
    Users = list_to_integer(UsersS),
    K0 = list_to_integer(ContactsS),
    K = if K0 >= Users -> (Users - 1) div 2 * 2; true -> K0 end,
    D = list_to_binary(Domain),
    Name = fun(I) -> list_to_binary(Prefix ++ integer_to_list(I)) end,
    Items = [begin
                 U = Name(I),
                 C = Name(contact_of(I, J, K, Users)),
                 %% #roster{usj, us, jid, name, subscription, ask, groups, askmessage, xs}
                 {roster, {U, D, {C, D, <<>>}}, {U, D}, {C, D, <<>>}, <<>>, both, none, [],
                  <<>>, []}
             end || I <- lists:seq(0, Users - 1), J <- lists:seq(0, K - 1)],
    case net_adm:ping(Node) of
        pong -> ok;
        pang -> io:format(standard_error, "ejabberd_rosters: cannot reach ~s~n", [Node]), halt(1)
    end,
    %% In chunks, so that no single call runs for long.
    Results = [rpc:call(Node, lists, map, [fun mod_roster:set_roster/1, Chunk], 60000)
               || Chunk <- chunks(Items, 500)],
    Bad = [R || L <- Results, R <- (case is_list(L) of true -> L; false -> [L] end),
                R =/= ok, element(1, R) =/= atomic],
    case Bad of
        [] ->
            io:format(standard_error, "ejabberd_rosters: ~b rosters of ~b contacts (~b items)~n",
                      [Users, K, length(Items)]),
            halt(0);
        [First | _] ->
            io:format(standard_error, "ejabberd_rosters: ~b failures, first: ~p~n",
                      [length(Bad), First]),
            halt(1)
    end.

contact_of(User, J, Contacts, N) ->
    Half = max(1, Contacts div 2),
    Idx = J rem (2 * Half),
    Off0 = Idx div 2 + 1,
    Off = case Idx rem 2 of 1 -> -Off0; 0 -> Off0 end,
    ((User + Off) rem N + N) rem N.

chunks([], _) -> [];
chunks(L, N) when length(L) =< N -> [L];
chunks(L, N) -> {H, T} = lists:split(N, L), [H | chunks(T, N)].
